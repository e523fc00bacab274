"""Migrations go up, down and up again, and match the ORM models exactly."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hybatch.db import make_engine
from hybatch.migrate import downgrade_to, upgrade_to_head
from hybatch.models import Base

TABLES = {"accounts", "api_keys", "files", "batches", "batch_request_results", "usage_records"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    upgrade_to_head(url)
    assert _tables(url) >= TABLES
    downgrade_to(url, "base")
    assert _tables(url) == set()
    upgrade_to_head(url)
    assert _tables(url) >= TABLES
    upgrade_to_head(url)  # already at head: a no-op


def test_round_trip_sqlite(empty_sqlite_url: str) -> None:
    _round_trip(empty_sqlite_url)


@pytest.mark.postgres
def test_round_trip_postgres(empty_postgres_url: str) -> None:
    _round_trip(empty_postgres_url)


def test_models_match_migrations_sqlite(sqlite_url: str) -> None:
    assert _schema_diff(sqlite_url) == []


@pytest.mark.postgres
def test_models_match_migrations_postgres(postgres_url: str) -> None:
    assert _schema_diff(postgres_url) == []

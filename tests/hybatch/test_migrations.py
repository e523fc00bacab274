"""Migrations go up, down and up again, and match the ORM models exactly."""

import json

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


def _fill_costs(url: str) -> dict[str, tuple]:
    """At revision 0004 (costs only in the lines), three usage records; then upgrade to head."""
    from alembic import command

    from hybatch.migrate import alembic_config

    command.upgrade(alembic_config(url), "0004")
    engine = make_engine(url)
    x_billing = {
        "token_classes": {},
        "amount": "0.0000125",
        "currency": "usd",
        "price_version": "default@2025-01",
    }
    try:
        with engine.begin() as connection:
            now = "2026-12-01 10:00:00+00:00"
            connection.execute(
                sa.text(f"INSERT INTO accounts (id, name, created_at) VALUES ('a', 'acme', '{now}')")
            )
            connection.execute(
                sa.text(
                    "INSERT INTO api_keys (id, account_id, prefix, key_sha256, created_at) "
                    f"VALUES ('k', 'a', 'hb-x', '{'0' * 64}', '{now}')"
                )
            )
            connection.execute(
                sa.text(
                    "INSERT INTO files (id, account_id, filename, purpose, status, bytes, created_at) "
                    f"VALUES ('f', 'a', 'in.jsonl', 'batch', 'processed', 1, '{now}')"
                )
            )
            connection.execute(
                sa.text(
                    "INSERT INTO batches (id, account_id, api_key_id, endpoint, model, input_file_id, "
                    "completion_window, status, created_at, expires_at, total_requests, completed_requests, "
                    "failed_requests, input_tokens, cached_input_tokens, output_tokens) VALUES ('b', 'a', 'k', "
                    f"'/v1/completions', 'm', 'f', '24h', 'completed', '{now}', '{now}', 3, 3, 0, 3, 0, 3)"
                )
            )
            lines = {
                "priced": {"custom_id": "priced", "x_billing": x_billing},
                "with-a-nul": {"custom_id": "with-a-nul", "text": "a\x00b", "x_billing": x_billing},
                "unpriced": {"custom_id": "unpriced"},
            }
            for index, (custom_id, line) in enumerate(lines.items()):
                connection.execute(
                    sa.text(
                        "INSERT INTO batch_request_results (batch_id, custom_id, line_number, is_error, line, "
                        "created_at) VALUES ('b', :c, :n, false, :line, :now)"
                    ),
                    {"c": custom_id, "n": index + 1, "line": json.dumps(line), "now": now},
                )
                connection.execute(
                    sa.text(
                        "INSERT INTO usage_records (account_id, api_key_id, batch_id, custom_id, model, "
                        "cache_hit_input_tokens, cache_miss_input_tokens, output_tokens, prompt_tokens, "
                        "created_at) VALUES ('a', 'k', 'b', :c, 'm', 0, 1, 1, 1, :now)"
                    ),
                    {"c": custom_id, "now": now},
                )
        upgrade_to_head(url)
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT custom_id, amount, currency, price_version FROM usage_records")
            ).all()
        return {row[0]: tuple(row[1:]) for row in rows}
    finally:
        engine.dispose()


def _assert_costs_filled(url: str) -> None:
    costs = _fill_costs(url)
    priced = ("0.0000125", "usd", "default@2025-01")
    assert costs == {"priced": priced, "with-a-nul": priced, "unpriced": (None, None, None)}


def test_the_ledger_gets_its_costs_from_the_lines_sqlite(empty_sqlite_url: str) -> None:
    _assert_costs_filled(empty_sqlite_url)


@pytest.mark.postgres
def test_the_ledger_gets_its_costs_from_the_lines_postgres(empty_postgres_url: str) -> None:
    _assert_costs_filled(empty_postgres_url)

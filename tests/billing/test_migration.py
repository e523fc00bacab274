"""The billing migration (0002) goes up, down to 0001 and up again on SQLite and Postgres."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hybatch.db import make_engine
from hybatch.migrate import downgrade_to, upgrade_to_head

BILLING_TABLES = {
    "price_schedule_versions",
    "price_schedule_assignments",
    "billing_period_closes",
    "invoices",
    "invoice_lines",
    "billed_usage",
    "stripe_customers",
    "stripe_invoice_items",
    "stripe_events",
}
CORE_TABLES = {"accounts", "api_keys", "files", "batches", "batch_request_results", "usage_records"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    upgrade_to_head(url)
    assert _tables(url) >= CORE_TABLES | BILLING_TABLES
    downgrade_to(url, "0001")
    assert _tables(url) == CORE_TABLES
    upgrade_to_head(url)
    assert _tables(url) >= CORE_TABLES | BILLING_TABLES


def test_billing_migration_round_trip_sqlite(empty_sqlite_url: str) -> None:
    _round_trip(empty_sqlite_url)


@pytest.mark.postgres
def test_billing_migration_round_trip_postgres(empty_postgres_url: str) -> None:
    _round_trip(empty_postgres_url)

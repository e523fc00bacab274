"""The billing migration (0002) goes up, down to 0001 and up again on SQLite and Postgres; 0015 fills
each credit grant's drawn sum from its draws."""

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


def _grant_drawn_is_filled(url: str) -> None:
    upgrade_to_head(url)
    downgrade_to(url, "0014")
    engine = make_engine(url)
    # Draws of a batch that is not there: foreign keys off for this one connection.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        sqlite = engine.dialect.name == "sqlite"
        connection.execute(
            sa.text("PRAGMA foreign_keys = OFF" if sqlite else "SET session_replication_role = replica")
        )
        connection.execute(
            sa.text("INSERT INTO accounts (id, name, created_at) VALUES ('acct_m', 'm', '2026-03-01')")
        )
        connection.execute(
            sa.text(
                "INSERT INTO credit_grants (id, account_id, currency, amount, priority, created_at) "
                "VALUES ('cg_a', 'acct_m', 'usd', '10.00', 0, '2026-03-01'), "
                "('cg_b', 'acct_m', 'usd', '5.00', 0, '2026-03-01')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO credit_draws (batch_id, custom_id, grant_id, account_id, amount, created_at) "
                "VALUES ('b', 'r1', 'cg_a', 'acct_m', '0.000125', '2026-03-02'), "
                "('b', 'r2', 'cg_a', 'acct_m', '2.5', '2026-03-02')"
            )
        )
    engine.dispose()
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        drawn = dict(connection.execute(sa.text("SELECT id, drawn FROM credit_grants ORDER BY id")).all())
    engine.dispose()
    assert drawn == {"cg_a": "2.500125", "cg_b": "0"}  # 0.000125 + 2.5, summed exactly


def test_grants_get_their_drawn_sum_sqlite(empty_sqlite_url: str) -> None:
    _grant_drawn_is_filled(empty_sqlite_url)


@pytest.mark.postgres
def test_grants_get_their_drawn_sum_postgres(empty_postgres_url: str) -> None:
    _grant_drawn_is_filled(empty_postgres_url)

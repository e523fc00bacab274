"""The billing migration (0002) goes up, down to 0001 and up again on SQLite and Postgres; 0015 fills
each credit grant's drawn sum from its draws; 0005 each usage record's cost from its line."""

from __future__ import annotations

import json

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


def _usage_cost_is_filled(url: str) -> None:
    """0005 puts each record's cost where it is made: the amount, currency and price version its
    line's x_billing showed, parsed in Python (a line holding \\u0000 too); an unpriced line leaves
    NULLs."""
    upgrade_to_head(url)
    downgrade_to(url, "0004")
    engine = make_engine(url)
    priced = {
        "token_classes": {},
        "amount": "0.000315",
        "currency": "usd",
        "price_version": "default@2025-01",
    }
    lines = {
        "r1": {"custom_id": "r1", "response": {"body": {"text": "ok"}}, "x_billing": priced},
        "r2": {"custom_id": "r2", "response": {"body": {"text": "before\u0000after"}}, "x_billing": priced},
        "r3": {"custom_id": "r3", "response": {"body": {"text": "no price"}}},  # no schedule priced it
    }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        sqlite = engine.dialect.name == "sqlite"
        connection.execute(
            sa.text("PRAGMA foreign_keys = OFF" if sqlite else "SET session_replication_role = replica")
        )
        for number, (custom_id, line) in enumerate(lines.items(), start=1):
            connection.execute(
                sa.text(
                    "INSERT INTO batch_request_results (batch_id, custom_id, line_number, is_error, line, "
                    "created_at) VALUES ('b', :custom_id, :number, false, :line, '2026-03-02')"
                ),
                {"custom_id": custom_id, "number": number, "line": json.dumps(line)},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO usage_records (account_id, api_key_id, batch_id, custom_id, model, "
                    "cache_hit_input_tokens, cache_miss_input_tokens, output_tokens, prompt_tokens, created_at) "
                    "VALUES ('acct_m', 'key_m', 'b', :custom_id, 'm', 1000, 200, 50, 1200, '2026-03-02')"
                ),
                {"custom_id": custom_id},
            )
    engine.dispose()
    upgrade_to_head(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT custom_id, amount, currency, price_version FROM usage_records ORDER BY custom_id")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("r1", "0.000315", "usd", "default@2025-01"),
        ("r2", "0.000315", "usd", "default@2025-01"),
        ("r3", None, None, None),
    ]


def test_usage_records_get_their_cost_sqlite(empty_sqlite_url: str) -> None:
    _usage_cost_is_filled(empty_sqlite_url)


@pytest.mark.postgres
def test_usage_records_get_their_cost_postgres(empty_postgres_url: str) -> None:
    _usage_cost_is_filled(empty_postgres_url)

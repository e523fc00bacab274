"""The usage ledger carries the money: each usage record's cost, currency and price version.

Until now the cost of a request lived only in its output line's ``x_billing`` JSON, and three
readers joined back into it with JSON operators, which Postgres cannot apply to a line holding
``\\u0000`` (a model may write a NUL): one such line broke the usage page, the API's usage and a
batch's cost so far. Existing rows are filled from their lines, parsed here in Python.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:50:00
"""

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROWS_PER_UPDATE = 1000

_usage = sa.table(
    "usage_records",
    sa.column("id", sa.BigInteger()),
    sa.column("batch_id", sa.String()),
    sa.column("custom_id", sa.String()),
    sa.column("amount", sa.String()),
    sa.column("currency", sa.String()),
    sa.column("price_version", sa.String()),
)
_results = sa.table(
    "batch_request_results",
    sa.column("batch_id", sa.String()),
    sa.column("custom_id", sa.String()),
    sa.column("line", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("amount", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch.add_column(sa.Column("price_version", sa.String(length=130), nullable=True))
    _fill_from_lines(op.get_bind())


def _fill_from_lines(connection: sa.Connection) -> None:
    update = (
        sa.update(_usage)
        .where(_usage.c.id == sa.bindparam("record_id"))
        .values(
            amount=sa.bindparam("amount"),
            currency=sa.bindparam("currency"),
            price_version=sa.bindparam("version"),
        )
    )
    last_id = -1
    while True:  # a page of records at a time: a ledger can be large
        page = connection.execute(
            sa.select(_usage.c.id, _results.c.line)
            .join(
                _results,
                sa.and_(_results.c.batch_id == _usage.c.batch_id, _results.c.custom_id == _usage.c.custom_id),
            )
            .where(_usage.c.id > last_id)
            .order_by(_usage.c.id)
            .limit(ROWS_PER_UPDATE)
        ).all()
        if not page:
            return
        last_id = page[-1][0]
        priced = [_price_of(record_id, line) for record_id, line in page]
        priced = [row for row in priced if row is not None]
        if priced:
            connection.execute(update, priced)


def _price_of(record_id: int, line: dict | None) -> dict | None:
    price = (line or {}).get("x_billing")
    if not price or price.get("amount") is None:
        return None  # written without a price: stays unpriced
    return {
        "record_id": record_id,
        "amount": format(Decimal(price["amount"]), "f"),
        "currency": price.get("currency"),
        "version": price.get("price_version"),
    }


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("price_version")
        batch.drop_column("currency")
        batch.drop_column("amount")

"""Billing: price schedule versions and assignments, period closes, invoices and their lines,
billed usage (each usage record billed once), Stripe customers, invoice items and webhook events.

Money columns hold integer minor units or exact decimal strings (never floats).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:29:33.361582
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_period_closes",
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("period", name=op.f("pk_billing_period_closes")),
    )
    op.create_table(
        "price_schedule_versions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("schedule", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_schedule_versions")),
        sa.UniqueConstraint(
            "schedule", "effective_from", name=op.f("uq_price_schedule_versions_schedule_effective_from")
        ),
        sa.UniqueConstraint("schedule", "version", name=op.f("uq_price_schedule_versions_schedule_version")),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open", "paid", "payment_failed", "void", name="invoicestatus", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_amount", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payment_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stripe_invoice_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_invoices_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("account_id", "period", name=op.f("uq_invoices_account_id_period")),
        sa.UniqueConstraint("stripe_invoice_id", name=op.f("uq_invoices_stripe_invoice_id")),
    )
    op.create_table(
        "price_schedule_assignments",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("schedule", sa.String(length=64), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_price_schedule_assignments_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_schedule_assignments")),
        sa.UniqueConstraint(
            "account_id",
            "effective_from",
            name=op.f("uq_price_schedule_assignments_account_id_effective_from"),
        ),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_stripe_customers_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_stripe_customers")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_stripe_customers_stripe_customer_id")),
    )
    op.create_table(
        "invoice_lines",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("origin_period", sa.String(length=7), nullable=False),
        sa.Column("is_adjustment", sa.Boolean(), nullable=False),
        sa.Column("price_version", sa.String(length=130), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("token_class", sa.String(length=32), nullable=False),
        sa.Column("context_tier", sa.String(length=64), nullable=False),
        sa.Column("price_tier", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_lines")),
        sa.UniqueConstraint(
            "invoice_id", "line_number", name=op.f("uq_invoice_lines_invoice_id_line_number")
        ),
    )
    op.create_table(
        "stripe_invoice_items",
        sa.Column(
            "invoice_line_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("stripe_invoice_item_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_line_id"],
            ["invoice_lines.id"],
            name=op.f("fk_stripe_invoice_items_invoice_line_id_invoice_lines"),
        ),
        sa.PrimaryKeyConstraint("invoice_line_id", name=op.f("pk_stripe_invoice_items")),
        sa.UniqueConstraint(
            "stripe_invoice_item_id", name=op.f("uq_stripe_invoice_items_stripe_invoice_item_id")
        ),
    )
    op.create_table(
        "billed_usage",
        sa.Column(
            "usage_record_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_billed_usage_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["usage_record_id"],
            ["usage_records.id"],
            name=op.f("fk_billed_usage_usage_record_id_usage_records"),
        ),
        sa.PrimaryKeyConstraint("usage_record_id", name=op.f("pk_billed_usage")),
    )
    op.create_index(op.f("ix_billed_usage_invoice_id"), "billed_usage", ["invoice_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_billed_usage_invoice_id"), table_name="billed_usage")
    op.drop_table("billed_usage")
    op.drop_table("stripe_invoice_items")
    op.drop_table("invoice_lines")
    op.drop_table("stripe_customers")
    op.drop_table("price_schedule_assignments")
    op.drop_table("invoices")
    op.drop_table("stripe_events")
    op.drop_table("price_schedule_versions")
    op.drop_table("billing_period_closes")

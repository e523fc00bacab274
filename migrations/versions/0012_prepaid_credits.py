"""Prepaid credits (grants, draws, holds), credits applied on invoices, and billing alerts.

A credit applied on an issued invoice is as immutable as its lines: triggers refuse any edit or
delete of ``invoice_credits`` but the recording of its Stripe invoice item.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIXED_CREDIT_COLUMNS = ("invoice_id", "amount", "amount_minor", "currency")
MESSAGE = "issued invoices are immutable: correct them with a credit note"


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.String(length=64), nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"))


def upgrade() -> None:
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        _money("amount"),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("credit_grants", "account_id", "accounts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    op.create_index("ix_credit_grants_account_created", "credit_grants", ["account_id", "created_at"])
    op.create_table(
        "credit_draws",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        _money("amount"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("credit_draws", "batch_id", "batches"),
        _fk("credit_draws", "grant_id", "credit_grants"),
        _fk("credit_draws", "account_id", "accounts"),
        sa.PrimaryKeyConstraint("batch_id", "custom_id", "grant_id", name=op.f("pk_credit_draws")),
    )
    op.create_index(op.f("ix_credit_draws_grant_id"), "credit_draws", ["grant_id"])
    op.create_index(op.f("ix_credit_draws_account_id"), "credit_draws", ["account_id"])
    op.create_table(
        "credit_holds",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        _money("amount"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("credit_holds", "batch_id", "batches"),
        _fk("credit_holds", "account_id", "accounts"),
        sa.PrimaryKeyConstraint("batch_id", "custom_id", name=op.f("pk_credit_holds")),
    )
    op.create_index(op.f("ix_credit_holds_account_id"), "credit_holds", ["account_id"])
    op.create_table(
        "invoice_credits",
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        _money("amount"),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stripe_invoice_item_id", sa.String(length=255), nullable=True),
        _fk("invoice_credits", "invoice_id", "invoices"),
        sa.PrimaryKeyConstraint("invoice_id", name=op.f("pk_invoice_credits")),
        sa.UniqueConstraint("stripe_invoice_item_id", name=op.f("uq_invoice_credits_stripe_invoice_item_id")),
    )
    op.create_table(
        "billing_alerts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=130), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("billing_alerts", "account_id", "accounts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_alerts")),
        sa.UniqueConstraint(
            "account_id", "kind", "dedupe_key", name=op.f("uq_billing_alerts_account_id_kind_dedupe_key")
        ),
    )
    op.create_index("ix_billing_alerts_account_created", "billing_alerts", ["account_id", "created_at"])
    _create_credit_triggers()


def _create_credit_triggers() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FIXED_CREDIT_COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION hybatch_refuse_invoice_credit_change() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND NOT ({changed}) THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION '{MESSAGE} (% of an invoice credit)', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER invoice_credits_immutable BEFORE UPDATE OR DELETE ON invoice_credits "
            "FOR EACH ROW EXECUTE FUNCTION hybatch_refuse_invoice_credit_change()"
        )
        return
    op.execute(
        "CREATE TRIGGER invoice_credits_immutable_delete BEFORE DELETE ON invoice_credits "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )
    op.execute(
        "CREATE TRIGGER invoice_credits_immutable_update BEFORE UPDATE ON invoice_credits "
        f"WHEN {changed.replace('IS DISTINCT FROM', 'IS NOT')} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER invoice_credits_immutable ON invoice_credits")
        op.execute("DROP FUNCTION hybatch_refuse_invoice_credit_change()")
    else:
        op.execute("DROP TRIGGER invoice_credits_immutable_delete")
        op.execute("DROP TRIGGER invoice_credits_immutable_update")
    op.drop_table("billing_alerts")
    op.drop_table("invoice_credits")
    op.drop_table("credit_holds")
    op.drop_table("credit_draws")
    op.drop_table("credit_grants")

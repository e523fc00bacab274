"""Issued invoices are immutable in the database, not only through the ORM.

Triggers refuse any UPDATE or DELETE of an invoice line, the DELETE of an invoice, and an UPDATE of
an invoice that changes anything but its status, its status timestamps and its Stripe references:
a raw ``UPDATE invoice_lines SET amount_minor = amount_minor + 100`` fails, whoever runs it.
Corrections are credit notes, never edits.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 19:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Everything of an invoice but status, paid_at, payment_failed_at, voided_at, stripe_invoice_id and
# stripe_finalized_at (billing.invoicing.invoices._MUTABLE_INVOICE_COLUMNS).
FIXED_INVOICE_COLUMNS = (
    "id",
    "account_id",
    "period",
    "currency",
    "total_minor",
    "total_amount",
    "created_at",
    "finalized_at",
)
MESSAGE = "issued invoices are immutable: correct them with a credit note"


def _changed(columns: Sequence[str], is_distinct: str) -> str:
    return " OR ".join(f"NEW.{column} {is_distinct} OLD.{column}" for column in columns)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Two functions: a PL/pgSQL condition on NEW may only name the columns of its own table.
        op.execute(
            f"""
            CREATE FUNCTION hybatch_refuse_line_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '{MESSAGE} (% of an invoice line)', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"""
            CREATE FUNCTION hybatch_refuse_invoice_change() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND NOT ({_changed(FIXED_INVOICE_COLUMNS, "IS DISTINCT FROM")}) THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION '{MESSAGE} (% of an invoice)', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER invoice_lines_immutable BEFORE UPDATE OR DELETE ON invoice_lines "
            "FOR EACH ROW EXECUTE FUNCTION hybatch_refuse_line_change()"
        )
        op.execute(
            "CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices "
            "FOR EACH ROW EXECUTE FUNCTION hybatch_refuse_invoice_change()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER invoice_lines_immutable_{operation.lower()} BEFORE {operation} ON invoice_lines "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
    op.execute(
        f"CREATE TRIGGER invoices_immutable_delete BEFORE DELETE ON invoices BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )
    op.execute(
        f"CREATE TRIGGER invoices_immutable_update BEFORE UPDATE ON invoices "
        f"WHEN {_changed(FIXED_INVOICE_COLUMNS, 'IS NOT')} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER invoices_immutable ON invoices")
        op.execute("DROP TRIGGER invoice_lines_immutable ON invoice_lines")
        op.execute("DROP FUNCTION hybatch_refuse_invoice_change()")
        op.execute("DROP FUNCTION hybatch_refuse_line_change()")
        return
    for name in (
        "invoice_lines_immutable_update",
        "invoice_lines_immutable_delete",
        "invoices_immutable_delete",
        "invoices_immutable_update",
    ):
        op.execute(f"DROP TRIGGER {name}")

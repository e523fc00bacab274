"""Monthly spend limits per account and per API key (soft: an alert; hard: a stop), and credit notes.

Credit notes correct issued invoices and are as immutable as them: triggers refuse any edit or
delete of a note's lines, and of a note but the recording of its Stripe credit note.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spend_limits",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("soft", sa.String(length=64), nullable=True),
        sa.Column("hard", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_spend_limits_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spend_limits")),
        sa.UniqueConstraint("account_id", "scope", name=op.f("uq_spend_limits_account_id_scope")),
    )

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stripe_credit_note_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_credit_notes_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("invoice_id", "number", name=op.f("uq_credit_notes_invoice_id_number")),
        sa.UniqueConstraint("stripe_credit_note_id", name=op.f("uq_credit_notes_stripe_credit_note_id")),
    )
    op.create_index(op.f("ix_credit_notes_invoice_id"), "credit_notes", ["invoice_id"])
    op.create_table(
        "credit_note_lines",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("credit_note_id", sa.String(length=64), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("invoice_line_number", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_credit_note_lines_credit_note_id_credit_notes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_lines")),
        sa.UniqueConstraint(
            "credit_note_id", "line_number", name=op.f("uq_credit_note_lines_credit_note_id_line_number")
        ),
    )
    op.create_index(op.f("ix_credit_note_lines_credit_note_id"), "credit_note_lines", ["credit_note_id"])
    _create_credit_note_triggers()


FIXED_NOTE_COLUMNS = (
    "id",
    "invoice_id",
    "account_id",
    "number",
    "reason",
    "currency",
    "total_minor",
    "created_at",
)
MESSAGE = "credit notes are immutable: issue another one"


def _create_credit_note_triggers() -> None:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in FIXED_NOTE_COLUMNS)
    if op.get_bind().dialect.name == "postgresql":
        # Two functions: a PL/pgSQL condition on NEW may only name the columns of its own table.
        op.execute(
            f"""
            CREATE FUNCTION hybatch_refuse_credit_note_line_change() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION '{MESSAGE} (% of a credit note line)', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            f"""
            CREATE FUNCTION hybatch_refuse_credit_note_change() RETURNS trigger AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND NOT ({changed}) THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION '{MESSAGE} (% of a credit note)', TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER credit_notes_immutable BEFORE UPDATE OR DELETE ON credit_notes "
            "FOR EACH ROW EXECUTE FUNCTION hybatch_refuse_credit_note_change()"
        )
        op.execute(
            "CREATE TRIGGER credit_note_lines_immutable BEFORE UPDATE OR DELETE ON credit_note_lines "
            "FOR EACH ROW EXECUTE FUNCTION hybatch_refuse_credit_note_line_change()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER credit_note_lines_immutable_{operation.lower()} BEFORE {operation} "
            f"ON credit_note_lines BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )
    op.execute(
        f"CREATE TRIGGER credit_notes_immutable_delete BEFORE DELETE ON credit_notes "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )
    op.execute(
        "CREATE TRIGGER credit_notes_immutable_update BEFORE UPDATE ON credit_notes "
        f"WHEN {changed.replace('IS DISTINCT FROM', 'IS NOT')} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER credit_notes_immutable ON credit_notes")
        op.execute("DROP TRIGGER credit_note_lines_immutable ON credit_note_lines")
        op.execute("DROP FUNCTION hybatch_refuse_credit_note_change()")
        op.execute("DROP FUNCTION hybatch_refuse_credit_note_line_change()")
    else:
        for name in (
            "credit_note_lines_immutable_update",
            "credit_note_lines_immutable_delete",
            "credit_notes_immutable_delete",
            "credit_notes_immutable_update",
        ):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("credit_note_lines")
    op.drop_table("credit_notes")
    op.drop_table("spend_limits")

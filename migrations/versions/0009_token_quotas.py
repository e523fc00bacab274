"""Enqueued-token quotas: an account's own limits, and what each batch holds of its quota.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 19:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_quotas",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("enqueued_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_token_quotas_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "model", name=op.f("pk_token_quotas")),
    )
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("quota_prompt_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("quota_prompt_tokens")
    op.drop_table("token_quotas")

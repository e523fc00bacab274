"""Invoice lines that reprice units already billed (late usage moving a volume table's tier).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 19:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch copy: on SQLite a copied table would lose its triggers (0006).
    op.add_column("invoice_lines", sa.Column("repriced_from_tier", sa.Integer(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE invoice_lines DROP COLUMN repriced_from_tier")
    else:
        op.drop_column("invoice_lines", "repriced_from_tier")

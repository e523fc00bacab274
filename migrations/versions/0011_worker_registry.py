"""Live workers and their own queues; where each shard's task went, its prefix's key and who ran it
(cache affinity).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("batch_shards") as batch_op:
        batch_op.add_column(sa.Column("routed_to", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("affinity_key", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("done_by", sa.String(length=128), nullable=True))
    op.create_index("ix_batch_shards_affinity_key", "batch_shards", ["affinity_key"])


def downgrade() -> None:
    op.drop_index("ix_batch_shards_affinity_key", table_name="batch_shards")
    with op.batch_alter_table("batch_shards") as batch_op:
        batch_op.drop_column("done_by")
        batch_op.drop_column("affinity_key")
        batch_op.drop_column("routed_to")
    op.drop_table("workers")

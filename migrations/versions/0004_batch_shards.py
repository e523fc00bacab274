"""Shards and leases: a batch runs as many shard tasks, each under a lease a worker renews.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "batch_shards",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("num_requests", sa.Integer(), nullable=False),
        sa.Column("continues_previous", sa.Boolean(), nullable=False),
        sa.Column("input_key", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name=op.f("fk_batch_shards_batch_id_batches")),
        sa.PrimaryKeyConstraint("batch_id", "shard_index", name=op.f("pk_batch_shards")),
    )
    # The sweepers' question: which unfinished shards have a stale lease or publication.
    op.create_index("ix_batch_shards_status", "batch_shards", ["status"])


def downgrade() -> None:
    op.drop_index("ix_batch_shards_status", table_name="batch_shards")
    op.drop_table("batch_shards")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("published_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")

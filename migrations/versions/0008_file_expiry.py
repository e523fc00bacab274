"""File expiry, as OpenAI's: ``expires_at`` on files, ``output_expires_after`` on batches.

Files uploaded from now on with ``purpose=batch`` expire after 30 days unless the upload says
otherwise; files already stored keep no expiry (nothing a user uploaded disappears on an upgrade).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("output_expires_after_s", sa.Integer(), nullable=True))
    # The sweep's question: which files expired and are not deleted yet.
    op.create_index("ix_files_expires_at", "files", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_files_expires_at", table_name="files")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("output_expires_after_s")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("expires_at")

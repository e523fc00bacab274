"""Each credit grant keeps what has been drawn from it, written where the draw is made.

The balance summed every draw of the account on each request (a prepaid batch of 50,000 requests
read about 1.25 billion draw rows); now the draw-down adds to ``credit_grants.drawn`` under the
account's lock, in the transaction that writes the draw. Existing grants are filled from their
draws, summed here in Python (amounts are exact decimal text, never summed as floats).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 13:05:00
"""

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_grants = sa.table("credit_grants", sa.column("id", sa.String()), sa.column("drawn", sa.String()))
_draws = sa.table("credit_draws", sa.column("grant_id", sa.String()), sa.column("amount", sa.String()))


def upgrade() -> None:
    op.add_column(
        "credit_grants", sa.Column("drawn", sa.String(length=64), nullable=False, server_default="0")
    )
    bind = op.get_bind()
    drawn: dict[str, Decimal] = defaultdict(Decimal)
    for grant_id, amount in bind.execute(sa.select(_draws.c.grant_id, _draws.c.amount)):
        drawn[grant_id] += Decimal(amount)
    for grant_id, total in drawn.items():
        bind.execute(sa.update(_grants).where(_grants.c.id == grant_id).values(drawn=format(total, "f")))


def downgrade() -> None:
    with op.batch_alter_table("credit_grants") as batch:
        batch.drop_column("drawn")

"""Taking back the batches a killed embedded worker left behind.

kombu's SQLAlchemy transport (the embedded broker) hides a message once it is delivered and
never shows it again if the worker dies without acknowledging or rejecting it (SIGKILL, out of
memory, power loss); Redis would hand it out again after its visibility timeout. So an embedded
worker, when it starts, publishes again every batch a worker claimed but did not finish. A
duplicate message is harmless: the job skips what is recorded and returns at once for a batch
that is already over. (Several embedded workers on one data dir would take back each other's
running batches and run them twice over; embedded mode runs one.)
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.models import Batch, BatchStatus

EMBEDDED_BROKER_SCHEME = "sqla+"
_CLAIMED_UNFINISHED = (BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING)


def is_embedded_broker(broker_url: str) -> bool:
    return broker_url.startswith(EMBEDDED_BROKER_SCHEME)


def claimed_unfinished_batch_ids(session: Session) -> list[str]:
    """Batches a worker picked up and did not finish, oldest first."""
    claimed_validating = sa.and_(Batch.status == BatchStatus.VALIDATING, Batch.claimed_at.is_not(None))
    return list(
        session.scalars(
            sa.select(Batch.id)
            .where(sa.or_(Batch.status.in_(_CLAIMED_UNFINISHED), claimed_validating))
            .order_by(Batch.created_at)
        )
    )

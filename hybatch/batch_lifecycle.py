"""The worker's side of a batch's status: move it, notice a cancel (claiming it is ``hybatch.leases``).

Every move is one conditional UPDATE (``WHERE status IN from_statuses``) that also stamps
the status's ``*_at`` column, so a move that lost a race with the API (a cancel) changes
nothing and tells the caller so. Statuses, in order::

    validating -> in_progress -> finalizing -> completed
    validating | in_progress -> cancelling -> cancelled       (the API asks; the worker finishes)
    any unfinished -> failed | expired
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.models import Batch, BatchStatus, utc_now
from hybatch.webhooks import record_batch_event

_TIMESTAMP_COLUMN = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}
UNFINISHED = (
    BatchStatus.VALIDATING,
    BatchStatus.IN_PROGRESS,
    BatchStatus.FINALIZING,
    BatchStatus.CANCELLING,
)


def move_batch(
    session: Session,
    batch_id: str,
    to_status: BatchStatus,
    *,
    from_statuses: tuple[BatchStatus, ...],
    **values: object,
) -> bool:
    """Move the batch to ``to_status`` if it is in one of ``from_statuses``; does not commit.

    Stamps the status's ``*_at`` column and sets any extra column ``values`` (e.g.
    ``errors=[...]``, ``total_requests=n``) in the same UPDATE; a move to an ending also records
    its webhook event (``hybatch.webhooks``). False means another party moved the batch first:
    re-read it and act on what it is now.
    """
    if to_status is BatchStatus.VALIDATING:
        raise ValueError("no batch moves back to validating")
    columns = {"status": to_status, _TIMESTAMP_COLUMN[to_status]: utc_now(), **values}
    moved = session.execute(
        sa.update(Batch).where(Batch.id == batch_id, Batch.status.in_(from_statuses)).values(**columns)
    )
    if moved.rowcount != 1:
        return False
    if to_status.is_terminal:  # in the same transaction: a move rolled back sends nothing
        record_batch_event(session, batch_id, to_status)
    return True


def current_status(session: Session, batch_id: str) -> BatchStatus | None:
    """The batch's status as committed now (None when unknown); poll it between engine steps."""
    return session.execute(sa.select(Batch.status).where(Batch.id == batch_id)).scalar_one_or_none()

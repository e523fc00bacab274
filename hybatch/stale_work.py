"""What the sweepers look for: batch and shard work that no live worker holds and no task will start.

Every worker sweeps every half lease (and beat does, too); what a sweep finds it marks published
with a conditional UPDATE, so of several sweepers running at once exactly one sends each task.
Work needs a task when:

- a **shard** of an ``in_progress`` batch is ``running`` under an expired lease (its worker died or
  stalled) and no task was sent for it since the lease expired; or it is ``pending`` and its last
  task was sent more than ``republish_after`` ago (the message was lost: a long queue merely gets
  a duplicate, which returns at once); or it is ``pending``, its task went to one worker's own
  queue (cache affinity: ``worker.affinity``), that worker has not taken it within
  ``affinity_wait`` (it is busy) and another live worker is idle: the task goes to the shared
  queue as well;
- a **batch** has no live lease and is ``validating`` (claimed by a worker that died), ``finalizing``
  or ``cancelling``, with no task sent since its lease expired or since the cancel; or it is
  ``in_progress`` with every shard done or past ``expires_at`` (its last worker died before ending
  it), with no task sent for a lease period.

Tasks are idempotent, so a duplicate costs one lease check; a missing one would strand a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from hybatch.batch_lifecycle import UNFINISHED
from hybatch.models import Batch, BatchShard, BatchStatus, ShardStatus, Worker, utc_now

MAX_PER_SWEEP = 1000


@dataclass(frozen=True)
class StaleWork:
    """Tasks to send: ``worker.run_batch`` for each batch id, ``worker.run_shard`` for each shard."""

    batch_ids: list[str] = field(default_factory=list)
    shards: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.batch_ids or self.shards)


def _shard_needs_task(now, lease: timedelta, republish_after: timedelta, affinity_wait: timedelta):
    expired = sa.and_(
        BatchShard.status == ShardStatus.RUNNING,
        BatchShard.lease_expires_at < now,
        sa.or_(
            BatchShard.published_at.is_(None),
            BatchShard.published_at < BatchShard.lease_expires_at,
            BatchShard.published_at < now - republish_after,
        ),
    )
    lost = sa.and_(
        BatchShard.status == ShardStatus.PENDING,
        sa.or_(BatchShard.published_at.is_(None), BatchShard.published_at < now - republish_after),
    )
    running = aliased(BatchShard)
    idle_elsewhere = sa.exists().where(
        Worker.seen_at >= now - 2 * lease,
        Worker.name != BatchShard.routed_to,
        ~sa.exists().where(
            running.lease_owner == Worker.lease_owner,
            running.status == ShardStatus.RUNNING,
            running.lease_expires_at > now,
        ),
    )
    waited = sa.and_(
        BatchShard.status == ShardStatus.PENDING,
        BatchShard.routed_to.is_not(None),
        BatchShard.published_at < now - affinity_wait,
        idle_elsewhere,
    )
    in_progress = sa.exists().where(Batch.id == BatchShard.batch_id, Batch.status == BatchStatus.IN_PROGRESS)
    return sa.and_(sa.or_(expired, lost, waited), in_progress)


def _batch_needs_task(now, lease: timedelta, republish_after: timedelta):
    lease_free = sa.or_(Batch.lease_owner.is_(None), Batch.lease_expires_at < now)
    not_sent_since = sa.or_(
        Batch.published_at.is_(None),
        Batch.published_at < Batch.lease_expires_at,
        Batch.published_at < Batch.cancelling_at,
        Batch.published_at < now - republish_after,
    )
    owned_work = sa.and_(
        Batch.status.in_((BatchStatus.VALIDATING, BatchStatus.FINALIZING, BatchStatus.CANCELLING)),
        not_sent_since,
    )
    unfinished_shard = sa.exists().where(
        BatchShard.batch_id == Batch.id, BatchShard.status != ShardStatus.DONE
    )
    left_behind = sa.and_(
        Batch.status == BatchStatus.IN_PROGRESS,
        sa.or_(Batch.expires_at < now, ~unfinished_shard),
        sa.or_(Batch.published_at.is_(None), Batch.published_at < now - lease),
    )
    return sa.and_(lease_free, sa.or_(owned_work, left_behind))


def claim_stale_work(
    session: Session, *, lease: timedelta, republish_after: timedelta, affinity_wait: timedelta
) -> StaleWork:
    """Finds work that needs a task and marks it published now, so no other sweeper sends it; commits.

    The caller sends the tasks (``StaleWork``), to the shared queue. If it dies before sending them,
    the work is found again after ``republish_after``.
    """
    now = utc_now()
    found = StaleWork()
    shard_rule = _shard_needs_task(now, lease, republish_after, affinity_wait)
    candidates = session.execute(
        sa.select(BatchShard.batch_id, BatchShard.shard_index)
        .where(BatchShard.status != ShardStatus.DONE, shard_rule)
        .limit(MAX_PER_SWEEP)
    ).all()
    for batch_id, shard_index in candidates:
        marked = session.execute(
            sa.update(BatchShard)
            .where(BatchShard.batch_id == batch_id, BatchShard.shard_index == shard_index, shard_rule)
            .values(published_at=now, routed_to=None)
        )
        if marked.rowcount == 1:
            found.shards.append((batch_id, shard_index))
    batch_rule = _batch_needs_task(now, lease, republish_after)
    batch_ids = session.scalars(
        sa.select(Batch.id)
        .where(Batch.status.in_(UNFINISHED), batch_rule)
        .order_by(Batch.created_at)
        .limit(MAX_PER_SWEEP)
    ).all()
    for batch_id in batch_ids:
        marked = session.execute(
            sa.update(Batch).where(Batch.id == batch_id, batch_rule).values(published_at=now)
        )
        if marked.rowcount == 1:
            found.batch_ids.append(batch_id)
    session.commit()
    return found


def mark_shard_published(session: Session, batch_id: str, shard_index: int) -> None:
    """Record that a task for the shard was just sent to the shared queue (a put-back or a retry);
    does not commit."""
    session.execute(
        sa.update(BatchShard)
        .where(BatchShard.batch_id == batch_id, BatchShard.shard_index == shard_index)
        .values(published_at=utc_now(), routed_to=None)
    )


def mark_batch_published(session: Session, batch_id: str) -> None:
    """Record that a ``run_batch`` task for the batch was just sent; does not commit."""
    session.execute(sa.update(Batch).where(Batch.id == batch_id).values(published_at=utc_now()))

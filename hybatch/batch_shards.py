"""A batch's shards as rows: created when the batch is planned, read while it runs and ends.

The shards' leases are in ``hybatch.leases``; what the sweepers look for in ``hybatch.stale_work``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.models import BatchShard, ShardStatus, utc_now


@dataclass(frozen=True)
class PlannedShard:
    """One shard as planned: its index, how many requests, where its validated requests are stored."""

    shard_index: int
    num_requests: int
    input_key: str
    continues_previous: bool = False  # one subtree with the shard before it
    routed_to: str | None = None  # the worker whose own queue its task goes to (None: the shared one)
    affinity_key: str | None = None  # its prefix's key (worker.affinity)


def add_shards(session: Session, batch_id: str, shards: Sequence[PlannedShard]) -> None:
    """Insert the batch's shard rows as pending and published now (the caller sends the tasks
    right after committing); does not commit."""
    now = utc_now()
    session.execute(
        sa.insert(BatchShard),
        [
            {
                "batch_id": batch_id,
                "shard_index": shard.shard_index,
                "num_requests": shard.num_requests,
                "continues_previous": shard.continues_previous,
                "input_key": shard.input_key,
                "status": ShardStatus.PENDING,
                "attempts": 0,
                "published_at": now,
                "routed_to": shard.routed_to,
                "affinity_key": shard.affinity_key,
                "created_at": now,
            }
            for shard in shards
        ],
    )


def shard_indices(session: Session, batch_id: str) -> list[int]:
    return list(
        session.scalars(
            sa.select(BatchShard.shard_index)
            .where(BatchShard.batch_id == batch_id)
            .order_by(BatchShard.shard_index)
        )
    )


def input_keys(session: Session, batch_id: str) -> list[str]:
    """Where each shard's validated requests are stored, in shard order (none before planning)."""
    return list(
        session.scalars(
            sa.select(BatchShard.input_key)
            .where(BatchShard.batch_id == batch_id)
            .order_by(BatchShard.shard_index)
        )
    )


def get_shard(session: Session, batch_id: str, shard_index: int) -> BatchShard | None:
    return session.get(BatchShard, (batch_id, shard_index))


def orphaned_shard(session: Session, batch_id: str) -> int | None:
    """A pending shard of the batch that ran before and lost its worker (its lease expired or was
    given back), lowest index first; None when there is none."""
    return session.scalar(
        sa.select(BatchShard.shard_index)
        .where(
            BatchShard.batch_id == batch_id,
            sa.or_(
                sa.and_(BatchShard.status == ShardStatus.PENDING, BatchShard.attempts > 0),
                sa.and_(BatchShard.status == ShardStatus.RUNNING, BatchShard.lease_expires_at < utc_now()),
            ),
        )
        .order_by(BatchShard.shard_index)
        .limit(1)
    )


def pending_continuation(session: Session, batch_id: str, shard_index: int) -> int | None:
    """The shard after ``shard_index`` if it is pending and continues its subtree, else None."""
    following = session.scalar(  # a query, not session.get: the status must be read fresh
        sa.select(BatchShard.shard_index).where(
            BatchShard.batch_id == batch_id,
            BatchShard.shard_index == shard_index + 1,
            BatchShard.status == ShardStatus.PENDING,
            BatchShard.continues_previous.is_(True),
        )
    )
    return following


def num_unfinished_shards(session: Session, batch_id: str) -> int:
    """Shards of the batch not done yet; 0 for a batch with every shard done (or none planned)."""
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(BatchShard)
        .where(BatchShard.batch_id == batch_id, BatchShard.status != ShardStatus.DONE)
    )


def has_shards(session: Session, batch_id: str) -> bool:
    return session.scalar(sa.select(sa.exists().where(BatchShard.batch_id == batch_id))) or False


def last_runners(
    session: Session, affinity_keys: Sequence[str], lease_owners: Sequence[str]
) -> dict[str, str]:
    """For each affinity key, the lease owner among ``lease_owners`` running a shard with that key now,
    else the one that most recently finished one: its cache most likely holds the prefix. Keys never
    run there are absent."""
    if not affinity_keys or not lease_owners:
        return {}
    runners: dict[str, str] = {}
    keys, owners = sorted(set(affinity_keys)), list(lease_owners)
    for start in range(0, len(keys), 500):
        some_keys = BatchShard.affinity_key.in_(keys[start : start + 500])
        running = sa.select(BatchShard.affinity_key, BatchShard.lease_owner).where(
            some_keys, BatchShard.status == ShardStatus.RUNNING, BatchShard.lease_owner.in_(owners)
        )
        finished = (
            sa.select(BatchShard.affinity_key, BatchShard.done_by)
            .where(some_keys, BatchShard.status == ShardStatus.DONE, BatchShard.done_by.in_(owners))
            .order_by(BatchShard.done_at.desc())
        )
        for query in (running, finished):
            for key, owner in session.execute(query):
                runners.setdefault(key, owner)
    return runners

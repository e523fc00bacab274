"""Leases on batches and shards, and what the sweepers find (hybatch.leases, hybatch.stale_work).

Every test runs on SQLite and on Postgres: the conditional UPDATEs are the whole mechanism.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_shards import PlannedShard, add_shards, num_unfinished_shards
from hybatch.leases import (
    Lease,
    finish_shard,
    new_lease_owner,
    release_batch,
    release_shard,
    renew_batch,
    renew_shard,
    take_batch,
    take_shard,
)
from hybatch.models import Batch, BatchShard, BatchStatus, ShardStatus, utc_now
from hybatch.stale_work import claim_stale_work
from tests.hybatch.batch_rows import add_batch

LEASE = timedelta(seconds=30)
REPUBLISH = timedelta(minutes=15)
AFFINITY_WAIT = timedelta(seconds=10)


def _lease() -> Lease:
    return Lease(owner=new_lease_owner(), duration=LEASE)


def _in_progress_batch(session: Session, num_shards: int = 2) -> str:
    batch = add_batch(session)
    batch.status = BatchStatus.IN_PROGRESS
    add_shards(session, batch.id, [PlannedShard(i, 3, f"{batch.id}-shard-{i}") for i in range(num_shards)])
    session.commit()
    return batch.id


def _age(session: Session, model, where, **columns) -> None:
    session.execute(sa.update(model).where(where).values(**columns))
    session.commit()


def test_one_shard_lease_at_a_time(session_factory: sessionmaker[Session]) -> None:
    first, second = _lease(), _lease()
    with session_factory() as session:
        batch_id = _in_progress_batch(session)
        assert take_shard(session, batch_id, 0, first)
        assert not take_shard(session, batch_id, 0, second)
        assert take_shard(session, batch_id, 0, first)  # ours already: taking again is harmless
        assert renew_shard(session, batch_id, 0, first) and not renew_shard(session, batch_id, 0, second)
        session.commit()
        assert take_shard(session, batch_id, 1, second)  # another shard of the batch: free


def test_an_expired_shard_lease_is_taken_over_and_the_old_owner_learns_it(
    session_factory: sessionmaker[Session],
) -> None:
    dead, alive = _lease(), _lease()
    with session_factory() as session:
        batch_id = _in_progress_batch(session)
        assert take_shard(session, batch_id, 0, dead)
        _age(
            session,
            BatchShard,
            BatchShard.batch_id == batch_id,
            lease_expires_at=utc_now() - timedelta(seconds=1),
        )
        assert take_shard(session, batch_id, 0, alive)

        assert not renew_shard(session, batch_id, 0, dead)
        assert not finish_shard(session, batch_id, 0, dead)
        assert not release_shard(session, batch_id, 0, dead)
        shard = session.get(BatchShard, (batch_id, 0))
        session.refresh(shard)
        assert (shard.status, shard.lease_owner, shard.attempts) == (ShardStatus.RUNNING, alive.owner, 2)


def test_finished_shards_are_never_taken_again(session_factory: sessionmaker[Session]) -> None:
    lease = _lease()
    with session_factory() as session:
        batch_id = _in_progress_batch(session)
        assert num_unfinished_shards(session, batch_id) == 2
        for index in (0, 1):
            assert take_shard(session, batch_id, index, lease)
            assert finish_shard(session, batch_id, index, lease)
        assert num_unfinished_shards(session, batch_id) == 0
        assert not take_shard(session, batch_id, 0, _lease())


def test_a_released_shard_is_pending_for_anyone(session_factory: sessionmaker[Session]) -> None:
    first, second = _lease(), _lease()
    with session_factory() as session:
        batch_id = _in_progress_batch(session)
        assert take_shard(session, batch_id, 0, first)
        assert release_shard(session, batch_id, 0, first)
        assert take_shard(session, batch_id, 0, second)


def test_batch_leases_stamp_the_claim_once_and_end_with_the_batch(
    session_factory: sessionmaker[Session],
) -> None:
    first, second = _lease(), _lease()
    with session_factory() as session:
        batch = add_batch(session)
        assert take_batch(session, batch.id, first)
        session.refresh(batch)
        claimed_at = batch.claimed_at
        assert claimed_at is not None
        assert not take_batch(session, batch.id, second)
        assert renew_batch(session, batch.id, first) and not renew_batch(session, batch.id, second)
        release_batch(session, batch.id, first)
        assert take_batch(session, batch.id, second)
        session.refresh(batch)
        assert batch.claimed_at == claimed_at
        release_batch(session, batch.id, second)
        _age(session, Batch, Batch.id == batch.id, status=BatchStatus.COMPLETED)
        assert not take_batch(session, batch.id, first)


def _sweep(session: Session):
    return claim_stale_work(session, lease=LEASE, republish_after=REPUBLISH, affinity_wait=AFFINITY_WAIT)


def test_a_dead_workers_shard_is_sent_again_once_by_one_of_many_sweepers(
    session_factory: sessionmaker[Session],
) -> None:
    dead = _lease()
    with session_factory() as session:
        batch_id = _in_progress_batch(session)
        assert take_shard(session, batch_id, 0, dead)
        assert take_shard(session, batch_id, 1, dead)
        assert not _sweep(session)  # live leases, tasks just sent: nothing to do

        _age(
            session,
            BatchShard,
            sa.and_(BatchShard.batch_id == batch_id, BatchShard.shard_index == 0),
            published_at=utc_now() - LEASE * 2,  # sent, taken, then the lease ran out
            lease_expires_at=utc_now() - timedelta(seconds=1),
        )
        with session_factory() as other:
            found = _sweep(session), _sweep(other)
        assert [work.shards for work in found] == [[(batch_id, 0)], []]
        assert not _sweep(session)  # sent since the lease expired: not again


def test_a_pending_shard_whose_task_was_lost_is_sent_again_after_the_grace(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        batch_id = _in_progress_batch(session, num_shards=1)
        assert not _sweep(session)
        _age(session, BatchShard, BatchShard.batch_id == batch_id, published_at=utc_now() - REPUBLISH * 2)
        assert _sweep(session).shards == [(batch_id, 0)]
        assert not _sweep(session)


def test_shards_of_a_batch_no_longer_in_progress_are_left_alone(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        batch_id = _in_progress_batch(session, num_shards=1)
        _age(session, BatchShard, BatchShard.batch_id == batch_id, published_at=utc_now() - REPUBLISH * 2)
        _age(session, Batch, Batch.id == batch_id, status=BatchStatus.COMPLETED)
        assert not _sweep(session)


def test_batch_work_without_a_live_worker_is_sent_again(session_factory: sessionmaker[Session]) -> None:
    dead = _lease()
    with session_factory() as session:
        validating = add_batch(session, account_name="validating")
        _age(session, Batch, Batch.id == validating.id, published_at=utc_now())
        assert take_batch(session, validating.id, dead)
        assert validating.id not in _sweep(session).batch_ids  # its worker is alive
        _age(
            session,
            Batch,
            Batch.id == validating.id,
            published_at=utc_now() - LEASE * 2,
            lease_expires_at=utc_now() - timedelta(seconds=1),
        )
        assert _sweep(session).batch_ids == [validating.id]
        assert not _sweep(session)

        cancelled = add_batch(session, account_name="cancelled")
        _age(
            session,
            Batch,
            Batch.id == cancelled.id,
            status=BatchStatus.CANCELLING,
            published_at=utc_now() - timedelta(seconds=5),
            cancelling_at=utc_now(),
        )
        assert _sweep(session).batch_ids == [cancelled.id]

        all_done = _in_progress_batch(session, num_shards=1)
        _age(session, BatchShard, BatchShard.batch_id == all_done, status=ShardStatus.DONE)
        _age(session, Batch, Batch.id == all_done, published_at=utc_now() - LEASE * 2)
        assert _sweep(session).batch_ids == [all_done]

"""The worker registry (hybatch.worker_registry), on SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch import batch_shards, worker_registry
from hybatch.batch_shards import PlannedShard, add_shards
from hybatch.leases import Lease, finish_shard, take_shard
from hybatch.models import BatchStatus, Worker, utc_now
from hybatch.settings import Settings
from hybatch.worker_registry import WorkerIdentity, own_queue
from tests.hybatch.batch_rows import add_batch

GONE_AFTER = timedelta(seconds=90)


def identity(name: str, owner: str | None = None) -> WorkerIdentity:
    return WorkerIdentity(name=name, queue=own_queue("hybatch", name), lease_owner=owner or f"host:1:{name}")


def names(session: Session) -> list[str]:
    return sorted(w.name for w in worker_registry.live_workers(session, gone_after=GONE_AFTER))


def test_register_see_and_deregister(session_factory: sessionmaker[Session]) -> None:
    a, b = identity("a"), identity("b")
    with session_factory() as session:
        worker_registry.register(session, a)
        worker_registry.register(session, b)
        assert names(session) == ["a", "b"]
        # A restart under the same (pinned) name replaces the row: one entry, the new lease owner.
        restarted = identity("a", owner="host:2:new")
        worker_registry.register(session, restarted)
        assert session.scalars(sa.select(Worker.lease_owner).where(Worker.name == "a")).all() == [
            "host:2:new"
        ]
        # The old process stopping late does not remove its successor.
        worker_registry.deregister(session, a)
        assert names(session) == ["a", "b"]
        worker_registry.deregister(session, restarted)
        assert names(session) == ["b"]
        # Dropped (say, by a sweep that thought it gone) and still alive: seeing it registers it again.
        worker_registry.mark_seen(session, a)
        assert names(session) == ["a", "b"]


def test_a_worker_not_seen_for_two_leases_is_gone(session_factory: sessionmaker[Session]) -> None:
    a, b = identity("a"), identity("b")
    with session_factory() as session:
        worker_registry.register(session, a)
        worker_registry.register(session, b)
        session.execute(
            sa.update(Worker).where(Worker.name == "a").values(seen_at=utc_now() - 2 * GONE_AFTER)
        )
        session.commit()
        assert names(session) == ["b"]
        assert worker_registry.forget_gone(session, gone_after=GONE_AFTER) == 1
        assert session.scalars(sa.select(Worker.name)).all() == ["b"]
        worker_registry.mark_seen(session, b)
        assert worker_registry.forget_gone(session, gone_after=GONE_AFTER) == 0


def test_busy_means_holding_a_live_shard_lease(session_factory: sessionmaker[Session]) -> None:
    lease = Lease(owner="host:1:busy", duration=timedelta(seconds=30))
    with session_factory() as session:
        batch = add_batch(session)
        batch.status = BatchStatus.IN_PROGRESS
        add_shards(session, batch.id, [PlannedShard(0, 3, "key-0"), PlannedShard(1, 3, "key-1")])
        session.commit()
        assert worker_registry.busy_lease_owners(session) == set()
        assert take_shard(session, batch.id, 0, lease)
        assert worker_registry.busy_lease_owners(session) == {"host:1:busy"}


def test_this_worker_is_one_identity_per_process() -> None:
    pinned = worker_registry.this_worker(Settings(worker_name="gpu-3", task_queue="jobs"))
    assert pinned.name == "gpu-3" and pinned.queue == "jobs.worker.gpu-3"
    unpinned = worker_registry.this_worker(Settings(task_queue="jobs"))
    assert unpinned.name == unpinned.lease_owner == pinned.lease_owner
    assert unpinned.queue == own_queue("jobs", unpinned.lease_owner)


def test_last_runners_names_who_finished_a_prefix_last(session_factory: sessionmaker[Session]) -> None:
    first, second = (Lease(owner=f"host:1:{n}", duration=timedelta(seconds=30)) for n in ("first", "second"))
    with session_factory() as session:
        batch = add_batch(session)
        batch.status = BatchStatus.IN_PROGRESS
        add_shards(
            session,
            batch.id,
            [
                PlannedShard(i, 1, f"key-{i}", affinity_key=key)
                for i, key in enumerate(["k1", "k1", "k2", "k3"])
            ],
        )
        session.commit()
        for shard_index, lease in [(0, first), (1, second), (2, first)]:
            assert take_shard(session, batch.id, shard_index, lease)
            assert finish_shard(session, batch.id, shard_index, lease)
        assert take_shard(session, batch.id, 3, second)  # running now: the prefix is there already
        owners = [first.owner, second.owner]
        assert batch_shards.last_runners(session, ["k1", "k2", "k3", "k4"], owners) == {
            "k1": second.owner,  # the later of the two
            "k2": first.owner,
            "k3": second.owner,
        }
        assert batch_shards.last_runners(session, ["k1", "k2"], [first.owner]) == {
            "k1": first.owner,
            "k2": first.owner,
        }

"""Which workers are alive and which queue reaches each one alone, for routing shards by cache affinity.

Every worker consumes the shared queue (``Settings.task_queue``) and a queue of its own,
``<task_queue>.worker.<name>``. It registers when it starts consuming, its sweeper thread marks it
seen every tick, and it removes itself when it stops; a worker not seen for two leases is gone (it
was killed), and the next registration sweep removes its row. ``worker.affinity`` picks among the
live ones.

The name is the worker's lease owner (host, pid, a random tag) unless ``HYBATCH_WORKER_NAME`` pins
it: a worker restarted under the same name keeps receiving the prefixes its disk tier still holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.leases import new_lease_owner
from hybatch.models import BatchShard, ShardStatus, Worker, utc_now
from hybatch.settings import Settings

_QUEUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True)
class WorkerIdentity:
    """One worker process: its name, its own queue, and the owner name on its leases."""

    name: str
    queue: str
    lease_owner: str


def own_queue(task_queue: str, worker_name: str) -> str:
    """The queue only the named worker consumes."""
    return f"{task_queue}.worker.{_QUEUE_UNSAFE.sub('_', worker_name)}"


@lru_cache(maxsize=1)
def _process_lease_owner() -> str:
    return new_lease_owner()


def this_worker(settings: Settings) -> WorkerIdentity:
    """This process's identity: the same object for the CLI that starts Celery and for its tasks."""
    lease_owner = _process_lease_owner()
    name = settings.worker_name or lease_owner
    return WorkerIdentity(name=name, queue=own_queue(settings.task_queue, name), lease_owner=lease_owner)


def register(session: Session, worker: WorkerIdentity) -> None:
    """Record the worker as live now (a row left by an earlier process of the same name is replaced)."""
    session.execute(sa.delete(Worker).where(Worker.name == worker.name))
    now = utc_now()
    session.add(
        Worker(
            name=worker.name, queue=worker.queue, lease_owner=worker.lease_owner, started_at=now, seen_at=now
        )
    )
    session.commit()


def mark_seen(session: Session, worker: WorkerIdentity) -> None:
    """The worker is still alive (its sweeper thread says so every tick); re-registers it if it was dropped."""
    updated = session.execute(
        sa.update(Worker)
        .where(Worker.name == worker.name, Worker.lease_owner == worker.lease_owner)
        .values(seen_at=utc_now())
    )
    if updated.rowcount == 0:
        session.rollback()
        register(session, worker)
        return
    session.commit()


def deregister(session: Session, worker: WorkerIdentity) -> None:
    """The worker stops consuming: route nothing more to it."""
    session.execute(
        sa.delete(Worker).where(Worker.name == worker.name, Worker.lease_owner == worker.lease_owner)
    )
    session.commit()


def forget_gone(session: Session, *, gone_after: timedelta) -> int:
    """Remove workers not seen for ``gone_after`` (killed without deregistering); returns how many."""
    removed = session.execute(sa.delete(Worker).where(Worker.seen_at < utc_now() - gone_after))
    session.commit()
    return removed.rowcount


def live_workers(session: Session, *, gone_after: timedelta) -> list[WorkerIdentity]:
    """Workers seen within ``gone_after``, each with whether it holds a live shard lease."""
    rows = session.execute(
        sa.select(Worker.name, Worker.queue, Worker.lease_owner).where(
            Worker.seen_at >= utc_now() - gone_after
        )
    ).all()
    return [WorkerIdentity(name=name, queue=queue, lease_owner=owner) for name, queue, owner in rows]


def busy_lease_owners(session: Session) -> set[str]:
    """Lease owners running a shard right now (a live lease)."""
    return set(
        session.scalars(
            sa.select(BatchShard.lease_owner)
            .where(BatchShard.status == ShardStatus.RUNNING, BatchShard.lease_expires_at > utc_now())
            .distinct()
        )
    )

"""The sweeper: sends tasks again for work whose worker died (``hybatch.stale_work`` says which).

Every worker process runs one in a daemon thread, every half lease; beat runs the same sweep as
the ``worker.sweep`` task, so a fleet whose workers are all busy or all restarting still recovers.
Several sweepers at once are harmless: each piece of stale work is claimed by exactly one.

The same thread sends the webhooks that are due, every second (``hybatch.webhooks``). It sends them
itself rather than as Celery tasks: a solo worker runs one task at a time, so a delivery queued
behind a batch's shards would wait for all of them.

An embedded worker (the serverless broker of ``make run``) is the only worker on its data dir, so
at start-up it also ends every lease left by an earlier process at once (``expire_leases_of_others``)
instead of waiting out the lease: a killed ``hybatch up`` resumes as soon as it starts again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch import webhooks, worker_registry
from hybatch.models import Batch, BatchShard, utc_now
from hybatch.settings import Settings
from hybatch.stale_work import StaleWork, claim_stale_work
from hybatch.worker_registry import WorkerIdentity
from worker.jobs import TaskSender

log = logging.getLogger(__name__)

EMBEDDED_BROKER_SCHEME = "sqla+"


def is_embedded_broker(broker_url: str) -> bool:
    return broker_url.startswith(EMBEDDED_BROKER_SCHEME)


def sweep(session_factory: sessionmaker[Session], send: TaskSender, settings: Settings) -> StaleWork:
    """One sweep: claim the stale work, then send a task for each piece; returns what was sent."""
    with session_factory() as session:
        work = claim_stale_work(
            session,
            lease=timedelta(seconds=settings.lease_s),
            republish_after=timedelta(seconds=settings.republish_after_s),
            affinity_wait=timedelta(seconds=settings.affinity_wait_s),
        )
    for batch_id, shard_index in work.shards:
        log.warning("shard %d of batch %s has no live worker; sending it again", shard_index, batch_id)
        send.run_shard(batch_id, shard_index)
    for batch_id in work.batch_ids:
        log.warning("batch %s was left unfinished by a worker; sending it again", batch_id)
        send.run_batch(batch_id)
    return work


def expire_leases_of_others(session_factory: sessionmaker[Session], owner: str) -> int:
    """End every live lease not held by ``owner`` now (embedded mode's one worker); returns how many."""
    now = utc_now()
    with session_factory() as session:
        num_expired = 0
        for model in (Batch, BatchShard):
            expired = session.execute(
                sa.update(model)
                .where(
                    model.lease_owner.is_not(None), model.lease_owner != owner, model.lease_expires_at > now
                )
                .values(lease_expires_at=now - timedelta(seconds=1))
            )
            num_expired += expired.rowcount
        session.commit()
    return num_expired


WEBHOOK_TICK_S = 1.0


def deliver_webhooks(session_factory: sessionmaker[Session], settings: Settings) -> int:
    """Attempt every webhook delivery that is due; returns how many."""
    return webhooks.deliver_due(session_factory, allow_private=settings.webhook_allow_private)


def sweep_interval_s(settings: Settings) -> float:
    """How often a worker sweeps: every half lease, or sooner to end an affinity wait in time."""
    return min(settings.lease_s / 2, settings.affinity_wait_s)


def keep_registered(
    session_factory: sessionmaker[Session], worker: WorkerIdentity, settings: Settings
) -> None:
    """Mark this worker seen, and drop workers that were not seen for two leases (killed)."""
    with session_factory() as session:
        worker_registry.mark_seen(session, worker)
        worker_registry.forget_gone(session, gone_after=timedelta(seconds=2 * settings.lease_s))


class SweeperThread(threading.Thread):
    """Sweeps every ``interval_s`` and sends due webhooks every second until ``stop()``; a failed
    round is logged and tried again. With ``worker`` it also keeps that worker registered."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        send: TaskSender,
        settings: Settings,
        interval_s: float,
        worker: WorkerIdentity | None = None,
    ) -> None:
        super().__init__(name="hybatch-sweeper", daemon=True)
        self.session_factory = session_factory
        self.send = send
        self.settings = settings
        self.interval_s = interval_s
        self.worker = worker
        self._stopped = threading.Event()

    def run(self) -> None:
        next_sweep_s = time.monotonic() + self.interval_s
        while not self._stopped.wait(min(WEBHOOK_TICK_S, self.interval_s)):
            try:
                deliver_webhooks(self.session_factory, self.settings)
            except Exception:  # the database is down for a moment: next round
                log.exception("sending webhooks failed; trying again")
            if time.monotonic() < next_sweep_s:
                continue
            next_sweep_s = time.monotonic() + self.interval_s
            try:
                if self.worker is not None:
                    keep_registered(self.session_factory, self.worker, self.settings)
                sweep(self.session_factory, self.send, self.settings)
            except Exception:  # the database or the broker is down for a moment: next round
                log.exception("lease sweep failed; trying again in %.0f s", self.interval_s)

    def stop(self) -> None:
        self._stopped.set()

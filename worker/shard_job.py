"""One shard of a batch on the engine, under the shard's lease: the job behind ``worker.run_shard``.

::

    batch not in_progress     -> its own work (cancel, expiry, finalizing): ``jobs.run_batch``
    take the shard's lease    -> someone else holds it, or it is done: return
    run the shard's requests not yet recorded, each recorded in its own transaction with the
    lease renewed in it; between engine steps renew the lease and read the batch's status
      lease lost              -> stop, record nothing more (another worker has the shard)
      cancel / expiry         -> stop, give the lease back, end the batch (``jobs.run_batch``)
      worker shutting down    -> stop, give the lease back, raise ``JobInterrupted`` (put back)
      the engine failed       -> give the lease back, raise ``EngineFailed`` (a tensor-parallel rank
                                 died): the task puts the shard back for another worker and stops
                                 this one; the requests it was running are neither recorded nor billed
    all recorded              -> shard done; the last shard of the batch finalizes it; otherwise a
                                 shard of the batch whose worker died, or else the next shard of the
                                 same subtree if still pending, runs here

The engine is loaded before the lease is taken, since loading a checkpoint can outlast a lease;
a worker that cannot load it raises ``EngineUnavailable`` without touching the shard.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch import batch_shards
from hybatch.batch_input import BatchRequest
from hybatch.batch_lifecycle import current_status
from hybatch.leases import finish_shard, release_shard, renew_shard, take_shard
from hybatch.models import Batch, BatchRequestResult, BatchStatus, utc_now
from worker import jobs
from worker.batch_endings import record_unfinished
from worker.batch_generation import BatchGeneration, EngineFailed, LeaseLost
from worker.costing import BatchCosting
from worker.shard_inputs import read_shard_input

__all__ = ["EngineFailed", "EngineUnavailable", "run_shard"]


class EngineUnavailable(Exception):
    """This worker cannot load its engine (a bad checkpoint, out of device memory, a locked cache dir)."""


def run_shard(batch_id: str, shard_index: int, context: jobs.JobContext) -> BatchStatus | None:
    """Run the shard as far as it goes; returns the batch's status after (None for an unknown batch).

    Safe to call again at any point (redelivery, a sweeper's task): it returns at once while
    another worker holds the lease or when the shard is done, and skips recorded requests.
    """
    with context.session_factory() as session:
        status = current_status(session, batch_id)
        session.commit()
        if status is None or status.is_terminal:
            return status
        if status is not BatchStatus.IN_PROGRESS:
            return jobs.run_batch(batch_id, context)
        if context.shutdown_requested():
            raise jobs.interruption(session, batch_id, shard_index)
        shard = batch_shards.get_shard(session, batch_id, shard_index)
        session.commit()
        if shard is None:
            return status
        try:
            llm = context.load_llm()
        except Exception as error:
            raise EngineUnavailable(f"{type(error).__name__}: {error}") from error
        while True:
            if not take_shard(session, batch_id, shard_index, context.lease):
                return status
            outcome = _run_under_lease(session, context, batch_id, shard_index, shard.input_key, llm)
            if outcome is None:  # the lease was lost
                return current_status(session, batch_id)
            if outcome is not _Outcome.DONE:
                release_shard(session, batch_id, shard_index, context.lease)
                if outcome is _Outcome.SHUTDOWN:
                    raise jobs.interruption(session, batch_id, shard_index)
                return jobs.run_batch(batch_id, context)  # cancelled or expired: end the batch
            if batch_shards.num_unfinished_shards(session, batch_id) == 0:
                session.commit()
                return jobs.run_batch(batch_id, context)  # the last shard: finalize
            # Next here, before going back to the queue: a shard of this batch whose worker died (its
            # task waits behind the whole queue), else the next shard of the same subtree, whose
            # prefix this worker holds in its cache now (the queued tasks will find them taken).
            following = batch_shards.orphaned_shard(session, batch_id)
            if following is None:
                following = batch_shards.pending_continuation(session, batch_id, shard_index)
            session.commit()
            if following is None or context.shutdown_requested():
                return BatchStatus.IN_PROGRESS
            shard_index = following
            shard = batch_shards.get_shard(session, batch_id, shard_index)
            session.commit()


def _run_under_lease(
    session: Session, context: jobs.JobContext, batch_id: str, shard_index: int, input_key: str, llm
) -> str | None:
    """Runs the shard whose lease this worker holds; its ``_Outcome``, or None if the lease was lost."""
    run = _ShardRun(session, context, batch_id, shard_index, input_key)
    try:
        return run.run(llm)
    except LeaseLost:
        return None
    except BaseException:  # EngineFailed included: the lease goes back at once, for another worker
        session.rollback()
        release_shard(session, batch_id, shard_index, context.lease)
        raise


class _Outcome:
    DONE = "done"
    SHUTDOWN = "shutdown"
    BATCH_MOVED = "batch_moved"  # cancelled, expired, failed elsewhere


class _ShardRun:
    def __init__(
        self, session: Session, context: jobs.JobContext, batch_id: str, shard_index: int, input_key: str
    ) -> None:
        self.session = session
        self.context = context
        self.batch_id = batch_id
        self.shard_index = shard_index
        self.input_key = input_key
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} vanished")
        self.batch: Batch = batch
        self._last_poll_s = 0.0
        self._lease_lost = False

    def run(self, llm) -> str:
        requests = list(read_shard_input(self.context.storage, self.input_key))
        pending = self._pending(requests)
        try:
            costing = BatchCosting.open(self.session, self.batch)
            self.session.commit()
        except ValueError as error:  # a bad metadata.max_cost: the whole batch fails
            self.session.rollback()
            _fail_for_bad_cap(self.context, self.batch_id, str(error))
            return _Outcome.BATCH_MOVED
        generation = BatchGeneration(
            self.session, self.batch, costing, lambda: llm, self._should_stop, self._holds_lease
        )
        if pending and generation.run(pending):
            if self._lease_lost:
                raise LeaseLost(f"batch {self.batch_id}: shard {self.shard_index} was taken over")
            return _Outcome.SHUTDOWN if self.context.shutdown_requested() else _Outcome.BATCH_MOVED
        # The engine answers every request; should one be missing, report it rather than hang.
        record_unfinished(
            self.session,
            self.batch,
            requests,
            code="server_error",
            message="The engine returned no result for this request.",
        )
        if not finish_shard(self.session, self.batch_id, self.shard_index, self.context.lease):
            raise LeaseLost(f"batch {self.batch_id}: shard {self.shard_index} was taken over")
        return _Outcome.DONE

    def _pending(self, requests: list[BatchRequest]) -> list[BatchRequest]:
        ids = [request.custom_id for request in requests]
        done: set[str] = set()
        for start in range(0, len(ids), 500):
            done |= set(
                self.session.scalars(
                    sa.select(BatchRequestResult.custom_id).where(
                        BatchRequestResult.batch_id == self.batch_id,
                        BatchRequestResult.custom_id.in_(ids[start : start + 500]),
                    )
                )
            )
        self.session.commit()
        return [request for request in requests if request.custom_id not in done]

    def _holds_lease(self, session: Session) -> bool:
        if renew_shard(session, self.batch_id, self.shard_index, self.context.lease):
            return True
        self._lease_lost = True
        return False

    def _should_stop(self) -> bool:
        if self.context.shutdown_requested() or utc_now() >= self.batch.expires_at:
            return True
        now_s = time.monotonic()
        if now_s - self._last_poll_s < self.context.status_poll_interval_s:
            return False
        self._last_poll_s = now_s
        if not self._holds_lease(self.session):
            self.session.rollback()
            return True
        self.session.commit()  # the renewal
        status = current_status(self.session, self.batch_id)
        self.session.commit()
        return status is not BatchStatus.IN_PROGRESS


def _fail_for_bad_cap(context: jobs.JobContext, batch_id: str, message: str) -> None:
    jobs.fail_batch(
        batch_id,
        context,
        message=message,
        errors=[{"code": "invalid_metadata", "line": None, "message": message, "param": "metadata.max_cost"}],
    )

"""A batch's own work, from claim to result files: the plain job behind the ``worker.run_batch`` task.

This is the worker contract of docs/operations.md. The job holds the batch's lease
(``hybatch.leases``) while it works, and is a loop over the batch's committed status; each handler
does its part and returns the status the batch is in after it (re-read whenever another party
moved the batch first), so a redelivered or restarted task simply continues from wherever the
batch is::

    validating   check the input file -> failed (errors) | cut into shards, one ``worker.run_shard``
                 task each (``worker.shard_job``) -> in_progress (total_requests)
    in_progress  the shards run it; when every shard is done -> finalizing (the last shard's worker
                 calls this job directly)
    finalizing   result files -> completed
    cancelling   unfinished requests become ``batch_cancelled`` error lines -> cancelled
    (expired)    validating or in_progress past ``expires_at``: unfinished requests become
                 ``batch_expired`` error lines -> expired

Only ``record_success`` writes usage, once per finished request; cancelled, expired and failed
requests are error lines without usage, written in bulk (``worker.batch_endings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.pricing.budget_cap import parse_max_cost
from hybatch import batch_shards, worker_registry
from hybatch.batch_input import BatchInput, BatchRequest, validate_batch_input
from hybatch.batch_lifecycle import UNFINISHED, current_status, move_batch
from hybatch.batch_shards import PlannedShard
from hybatch.leases import Lease, release_batch, renew_batch, take_batch
from hybatch.models import Batch, BatchStatus, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.settings import Settings
from hybatch.storage import FileStorage, iter_chunks
from worker.affinity import SHARED, Route, affinity_key, route_head_shards
from worker.batch_endings import close_batch, delete_shard_inputs, record_unfinished
from worker.batch_generation import TextGenerator
from worker.shard_inputs import read_shard_input, shard_input_key, write_shard_input
from worker.sharding import continues_previous, cut_shards, send_order

__all__ = ["JobContext", "JobInterrupted", "TaskSender", "TextGenerator", "fail_batch", "run_batch"]

STATUS_POLL_INTERVAL_S = 0.5


class TaskSender(Protocol):
    """Sends the worker's tasks (Celery in a worker; a queue in tests). Each call sends one."""

    def run_batch(self, batch_id: str) -> None: ...

    def run_shard(self, batch_id: str, shard_index: int, queue: str | None = None) -> None:
        """Send ``worker.run_shard``: to the shared queue, or to ``queue`` (one worker's own)."""


@dataclass(frozen=True)
class JobContext:
    """What a job runs with; a worker process builds one and reuses it for every batch and shard.

    ``load_llm`` is called only when a shard has requests to generate, so a batch that fails
    validation never loads the model. ``shutdown_requested`` is asked between engine steps: when
    True the job stops and raises ``JobInterrupted``, leaving its work for the next task.
    ``lease`` names this worker and how long its leases last; ``send`` sends follow-up tasks.
    ``status_poll_interval_s`` bounds how often a running shard renews its lease and reads the
    batch's status.
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    storage: FileStorage
    load_llm: Callable[[], TextGenerator]
    lease: Lease
    send: TaskSender
    shutdown_requested: Callable[[], bool] = lambda: False
    status_poll_interval_s: float = STATUS_POLL_INTERVAL_S


class JobInterrupted(Exception):
    """The worker is shutting down; the work was left unfinished, to be resumed by the next task.

    ``finished_requests`` of ``total_requests`` were recorded when it stopped (``total_requests``
    is None while the batch is not validated yet). ``shard_index`` is the shard that stopped, or
    None for the batch's own work.
    """

    def __init__(
        self,
        batch_id: str,
        finished_requests: int,
        total_requests: int | None,
        shard_index: int | None = None,
    ) -> None:
        self.batch_id = batch_id
        self.finished_requests = finished_requests
        self.total_requests = total_requests
        self.shard_index = shard_index
        super().__init__(f"batch {batch_id} stopped {self.progress}: the worker is shutting down")

    @property
    def progress(self) -> str:
        """``at 37/100`` or ``before validation``."""
        if self.total_requests is None:
            return "before validation"
        return f"at {self.finished_requests}/{self.total_requests}"


def interruption(session: Session, batch_id: str, shard_index: int | None = None) -> JobInterrupted:
    """The ``JobInterrupted`` of work that stops now, with the batch's recorded progress; ends the read."""
    status, finished, total = session.execute(
        sa.select(Batch.status, Batch.completed_requests + Batch.failed_requests, Batch.total_requests).where(
            Batch.id == batch_id
        )
    ).one()
    session.commit()
    return JobInterrupted(
        batch_id, finished, None if status is BatchStatus.VALIDATING else total, shard_index
    )


def run_batch(batch_id: str, context: JobContext) -> BatchStatus | None:
    """Do the batch's own work as far as it goes; returns its status after (None for an unknown batch).

    Safe to call again for the same batch at any point (redelivery, a sweeper's task): it returns
    at once while another worker holds the batch's lease, requests already recorded are skipped,
    and every status move is conditional. Raises ``JobInterrupted`` on shutdown, also before it
    starts: a worker that is stopping does not claim, validate or load anything.
    """
    with context.session_factory() as session:
        status = current_status(session, batch_id)
        session.commit()
        if status is None or status.is_terminal:
            return status
        if context.shutdown_requested():
            raise interruption(session, batch_id)
        if not take_batch(session, batch_id, context.lease):
            return _status(session, batch_id)  # another worker is on it
        try:
            return _BatchJob(session, context, batch_id).run()
        finally:
            session.rollback()
            release_batch(session, batch_id, context.lease)


def fail_batch(
    batch_id: str, context: JobContext, *, message: str, errors: list[dict] | None = None
) -> BatchStatus | None:
    """End an unfinished batch as ``failed`` after the worker gave up on it (retries exhausted).

    Keeps the lines already recorded (their usage is real), reports the other requests as
    ``batch_failed`` error lines, and writes the result files. ``errors`` (OpenAI's
    ``batch.errors.data``) defaults to one ``server_error`` with ``message``.
    """
    with context.session_factory() as session:
        status = current_status(session, batch_id)
        session.commit()
        if status is None or status.is_terminal:
            return status
        if not take_batch(session, batch_id, context.lease):
            return _status(session, batch_id)
        try:
            job = _BatchJob(session, context, batch_id)
            if errors is None:
                errors = [{"code": "server_error", "line": None, "message": message, "param": None}]
            return job.finish(
                BatchStatus.FAILED, UNFINISHED, code="batch_failed", message=message, errors=errors
            )
        finally:
            session.rollback()
            release_batch(session, batch_id, context.lease)


def _status(session: Session, batch_id: str) -> BatchStatus | None:
    status = current_status(session, batch_id)
    session.commit()  # end the read transaction
    return status


class _BatchJob:
    def __init__(self, session: Session, context: JobContext, batch_id: str) -> None:
        self.session = session
        self.context = context
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} vanished")
        self.batch: Batch = batch
        session.commit()  # end the read: validating a big input must not sit in a transaction
        self._input: BatchInput | None = None
        self._last_renewal_s = time.monotonic()

    def run(self) -> BatchStatus | None:
        status: BatchStatus | None = self.batch.status
        while status is not None and not status.is_terminal:
            next_status = self._advance(status)
            if next_status is status:  # in_progress with shards still running: they carry it on
                return status
            status = next_status
        return status

    def _advance(self, status: BatchStatus) -> BatchStatus | None:
        if status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS) and self._is_expired():
            return self._expire()
        if status is BatchStatus.VALIDATING:
            return self._validate()
        if status is BatchStatus.IN_PROGRESS:
            return self._check_shards()
        if status is BatchStatus.FINALIZING:
            return self._close(BatchStatus.COMPLETED, (BatchStatus.FINALIZING,))
        if status is BatchStatus.CANCELLING:
            return self.finish(
                BatchStatus.CANCELLED,
                (BatchStatus.CANCELLING,),
                code="batch_cancelled",
                message="The batch was cancelled before this request finished.",
            )
        raise ValueError(f"batch {self.batch.id}: no handler for status {status}")

    # -- validating ---------------------------------------------------------------------------

    def _read_input(self) -> BatchInput:
        if self._input is None:
            settings = self.context.settings
            with self.context.storage.open_read(self.batch.input_file_id) as reader:
                self._input = validate_batch_input(
                    self._renewing(iter_chunks(reader)),
                    endpoint=self.batch.endpoint,
                    served_model=self.batch.model,
                    tokenizer=PromptTokenizer.from_checkpoint(settings.model),
                    max_requests=settings.max_batch_lines,
                )
        return self._input

    def _renewing(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks``, renewing the batch's lease as they are read (validating a big file takes a while)."""
        for chunk in chunks:
            now_s = time.monotonic()
            if now_s - self._last_renewal_s > self.context.lease.duration.total_seconds() / 3:
                self._last_renewal_s = now_s
                if not renew_batch(self.session, self.batch.id, self.context.lease):
                    raise LookupError(f"batch {self.batch.id}: lease lost while validating")
            yield chunk

    def _validate(self) -> BatchStatus | None:
        batch_input = self._read_input()
        if not batch_input.is_valid:
            return self._fail_validation(batch_input)
        return self._plan(batch_input.requests, from_status=BatchStatus.VALIDATING)

    def _fail_validation(self, batch_input: BatchInput) -> BatchStatus | None:
        errors = [error.as_dict() for error in batch_input.errors]
        moved = move_batch(
            self.session, self.batch.id, BatchStatus.FAILED, from_statuses=UNFINISHED, errors=errors
        )
        self.session.commit()
        return BatchStatus.FAILED if moved else _status(self.session, self.batch.id)

    def _plan(self, requests: list[BatchRequest], *, from_status: BatchStatus) -> BatchStatus | None:
        """Cut the requests into shards, store them, commit the shard rows, then send a task per shard.

        A batch with a budget cap (``metadata.max_cost``) is one shard: its admission decisions
        need every running request's worst case in one place.
        """
        prompts = [request.generation.prompt_token_ids for request in requests]
        if _has_budget_cap(self.batch):
            groups = [list(range(len(requests)))]
        else:
            groups = cut_shards(prompts, target=self.context.settings.shard_requests)
        continues = continues_previous(prompts, groups)
        routes = self._routes(prompts, groups, continues)
        shards = []
        for shard_index, group in enumerate(groups):
            key = shard_input_key(self.batch.id, shard_index)
            # In input order inside the shard: the engine plans its own order, as for a whole batch.
            count = write_shard_input(self.context.storage, key, (requests[i] for i in sorted(group)))
            routed_to = routes[shard_index].worker
            shards.append(
                PlannedShard(
                    shard_index,
                    count,
                    key,
                    continues[shard_index],
                    routed_to=None if routed_to is None else routed_to.name,
                    affinity_key=affinity_key(self.batch.account_id, prompts[group[0]]),
                )
            )
        batch_shards.add_shards(self.session, self.batch.id, shards)
        if from_status is BatchStatus.VALIDATING:
            moved = move_batch(
                self.session,
                self.batch.id,
                BatchStatus.IN_PROGRESS,
                from_statuses=(BatchStatus.VALIDATING,),
                total_requests=len(requests),
            )
            if not moved:  # cancelled (or expired) while validating: no shards, no tasks
                self.session.rollback()
                delete_shard_inputs(self.context.storage, [shard.input_key for shard in shards])
                return _status(self.session, self.batch.id)
        self.session.commit()
        self._input = None  # the shards hold the requests now; let the parsed input go
        for shard_index in send_order(continues):
            self.context.send.run_shard(self.batch.id, shard_index, routes[shard_index].queue)
        return BatchStatus.IN_PROGRESS

    def _routes(
        self, prompts: list[Sequence[int]], groups: list[list[int]], continues: list[bool]
    ) -> list[Route]:
        """Each shard's route: a subtree's first shard to the worker its prefix picks (``worker.affinity``)."""
        if not self.context.settings.shard_affinity:
            return [SHARED] * len(groups)
        gone_after = timedelta(seconds=2 * self.context.settings.lease_s)
        workers = worker_registry.live_workers(self.session, gone_after=gone_after)
        busy = worker_registry.busy_lease_owners(self.session) if workers else set()
        heads = [index for index, continuing in enumerate(continues) if not continuing]
        keys = [affinity_key(self.batch.account_id, prompts[groups[index][0]]) for index in heads]
        ran = batch_shards.last_runners(self.session, keys, [worker.lease_owner for worker in workers])
        routes = [SHARED] * len(groups)
        for index, route in zip(heads, route_head_shards(keys, workers, busy, ran), strict=True):
            routes[index] = route
        return routes

    # -- in_progress --------------------------------------------------------------------------

    def _check_shards(self) -> BatchStatus | None:
        """Move on to finalizing once every shard is done; otherwise the shards carry the batch on."""
        if not batch_shards.has_shards(self.session, self.batch.id):
            # Started before shards existed (an upgrade): plan it now; recorded requests are skipped.
            batch_input = self._read_input()
            if not batch_input.is_valid:
                return self._fail_validation(batch_input)
            return self._plan(batch_input.requests, from_status=BatchStatus.IN_PROGRESS)
        if batch_shards.num_unfinished_shards(self.session, self.batch.id) > 0:
            self.session.commit()
            return BatchStatus.IN_PROGRESS
        # Every shard reported every one of its requests; should one be missing, report it.
        record_unfinished(
            self.session,
            self.batch,
            self._shard_requests(),
            code="server_error",
            message="The engine returned no result for this request.",
        )
        moved = move_batch(
            self.session, self.batch.id, BatchStatus.FINALIZING, from_statuses=(BatchStatus.IN_PROGRESS,)
        )
        self.session.commit()
        return BatchStatus.FINALIZING if moved else self._status()

    # -- endings ------------------------------------------------------------------------------

    def _expire(self) -> BatchStatus | None:
        window = self.batch.completion_window
        return self.finish(
            BatchStatus.EXPIRED,
            UNFINISHED,
            code="batch_expired",
            message=f"The batch expired (completion window {window}) before this request finished.",
        )

    def _shard_requests(self) -> Iterator[BatchRequest]:
        for key in batch_shards.input_keys(self.session, self.batch.id):
            yield from read_shard_input(self.context.storage, key)

    def _all_requests(self) -> tuple[Iterable[BatchRequest], int | None]:
        """Every request of the batch, from its shards once planned, else from its input file."""
        self.session.commit()
        if batch_shards.has_shards(self.session, self.batch.id):
            return self._shard_requests(), None
        try:
            batch_input = self._read_input()
        except Exception:  # an unreadable input must not keep the batch from ending
            return [], None
        if not batch_input.is_valid:
            return [], None
        return batch_input.requests, len(batch_input.requests)

    def finish(
        self,
        to_status: BatchStatus,
        from_statuses: tuple[BatchStatus, ...],
        *,
        code: str,
        message: str,
        **values: object,
    ) -> BatchStatus | None:
        """Report every unfinished request as an error line ``code``, then close the batch."""
        requests, total = self._all_requests()
        record_unfinished(self.session, self.batch, requests, code=code, message=message)
        if total is not None:
            values.setdefault("total_requests", total)
        return self._close(to_status, from_statuses, **values)

    def _close(
        self, to_status: BatchStatus, from_statuses: tuple[BatchStatus, ...], **values: object
    ) -> BatchStatus | None:
        storage = self.context.storage
        if close_batch(self.session, storage, self.batch, to_status, from_statuses, **values):
            delete_shard_inputs(storage, batch_shards.input_keys(self.session, self.batch.id))
            self.session.commit()
            return to_status
        return self._status()

    # -- helpers ------------------------------------------------------------------------------

    def _status(self) -> BatchStatus | None:
        return _status(self.session, self.batch.id)

    def _is_expired(self) -> bool:
        return utc_now() >= self.batch.expires_at


def _has_budget_cap(batch: Batch) -> bool:
    try:
        return parse_max_cost(batch.metadata_) is not None
    except ValueError:
        return True  # a bad cap fails the batch when its one shard opens the costing

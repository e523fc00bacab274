"""One batch from claim to result files: the plain job behind the ``worker.run_batch`` task.

This is the worker contract of docs/operations.md. The job is a loop over the batch's
committed status; each handler does its part and returns the status the batch is in after it
(re-read whenever another party moved the batch first), so a redelivered or restarted task
simply continues from wherever the batch is::

    validating   check the input file -> failed (errors) | in_progress (total_requests)
    in_progress  run the requests not yet recorded on the engine, one transaction per finished
                 request; between engine steps stop for a cancel, the expiry or a worker shutdown
                 -> finalizing
    finalizing   result files -> completed
    cancelling   unfinished requests become ``batch_cancelled`` error lines -> cancelled
    (expired)    validating or in_progress past ``expires_at``: unfinished requests become
                 ``batch_expired`` error lines -> expired

Only ``record_success`` writes usage, once per finished request; cancelled, expired and failed
requests are error lines without usage. The engine waves and the per-request records live in
``worker.batch_generation``; the error lines of unfinished requests, the result files and the final
move in ``worker.batch_endings``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_input import BatchInput, validate_batch_input
from hybatch.batch_lifecycle import UNFINISHED, claim_batch, current_status, move_batch
from hybatch.batch_results import finished_custom_ids
from hybatch.models import Batch, BatchStatus, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.settings import Settings
from hybatch.storage import FileStorage, iter_chunks
from worker.batch_endings import close_batch, record_unfinished
from worker.batch_generation import BatchGeneration, TextGenerator
from worker.costing import BatchCosting

__all__ = ["JobContext", "JobInterrupted", "TextGenerator", "fail_batch", "run_batch"]

STATUS_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class JobContext:
    """What a job runs with; a worker process builds one and reuses it for every batch.

    ``load_llm`` is called only when a batch has requests to generate, so a batch that fails
    validation never loads the model. ``shutdown_requested`` is asked between engine steps: when
    True the job stops and raises ``JobInterrupted``, leaving the batch for redelivery.
    ``status_poll_interval_s`` bounds how often the batch's status is read during generation.
    """

    settings: Settings
    session_factory: sessionmaker[Session]
    storage: FileStorage
    load_llm: Callable[[], TextGenerator]
    shutdown_requested: Callable[[], bool] = lambda: False
    status_poll_interval_s: float = STATUS_POLL_INTERVAL_S


class JobInterrupted(Exception):
    """The worker is shutting down; the batch was left unfinished, to be resumed by redelivery.

    ``finished_requests`` of ``total_requests`` were recorded when it stopped (``total_requests``
    is None while the batch is not validated yet).
    """

    def __init__(self, batch_id: str, finished_requests: int, total_requests: int | None) -> None:
        self.batch_id = batch_id
        self.finished_requests = finished_requests
        self.total_requests = total_requests
        super().__init__(f"batch {batch_id} stopped {self.progress}: the worker is shutting down")

    @property
    def progress(self) -> str:
        """``at 37/100`` or ``before validation``."""
        if self.total_requests is None:
            return "before validation"
        return f"at {self.finished_requests}/{self.total_requests}"


def run_batch(batch_id: str, context: JobContext) -> BatchStatus | None:
    """Run the batch as far as it goes; returns its final status (None for an unknown batch).

    Safe to call again for the same batch at any point (redelivery): requests already recorded
    are skipped, and every status move is conditional. Raises ``JobInterrupted`` on shutdown,
    also before it starts: a worker that is stopping does not claim, validate or load anything.
    """
    with context.session_factory() as session:
        if context.shutdown_requested():
            status = current_status(session, batch_id)
            if status is None or status.is_terminal:
                return status
            raise _interruption(session, batch_id)
        if not claim_batch(session, batch_id):
            return current_status(session, batch_id)
        return _BatchJob(session, context, batch_id).run()


def _interruption(session: Session, batch_id: str) -> JobInterrupted:
    """The ``JobInterrupted`` of a batch that stops now, with its recorded progress; ends the read."""
    status, finished, total = session.execute(
        sa.select(Batch.status, Batch.completed_requests + Batch.failed_requests, Batch.total_requests).where(
            Batch.id == batch_id
        )
    ).one()
    session.commit()
    return JobInterrupted(batch_id, finished, None if status is BatchStatus.VALIDATING else total)


def fail_batch(batch_id: str, context: JobContext, *, message: str) -> BatchStatus | None:
    """End an unfinished batch as ``failed`` after the worker gave up on it (retries exhausted).

    Keeps the lines already recorded (their usage is real), reports the other requests as
    ``batch_failed`` error lines when the input can still be read, and writes the result files.
    """
    with context.session_factory() as session:
        status = current_status(session, batch_id)
        if status is None or status.is_terminal:
            return status
        job = _BatchJob(session, context, batch_id)
        error = {"code": "server_error", "line": None, "message": message, "param": None}
        return job.finish(
            BatchStatus.FAILED, UNFINISHED, code="batch_failed", message=message, errors=[error]
        )


class _BatchJob:
    def __init__(self, session: Session, context: JobContext, batch_id: str) -> None:
        self.session = session
        self.context = context
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} vanished")
        self.batch: Batch = batch
        self._input: BatchInput | None = None
        self._last_poll_s = 0.0
        self._costing: BatchCosting | None = None

    @property
    def costing(self) -> BatchCosting:
        if self._costing is None:
            self._costing = BatchCosting.open(self.session, self.batch)
            self.session.commit()  # end the read transaction
        return self._costing

    def run(self) -> BatchStatus | None:
        status: BatchStatus | None = self.batch.status
        while status is not None and not status.is_terminal:
            status = self._advance(status)
        return status

    def _advance(self, status: BatchStatus) -> BatchStatus | None:
        if status in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS) and self._is_expired():
            return self._expire()
        if status is BatchStatus.VALIDATING:
            return self._validate()
        if status is BatchStatus.IN_PROGRESS:
            return self._run_requests()
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
                    iter_chunks(reader),
                    endpoint=self.batch.endpoint,
                    served_model=self.batch.model,
                    tokenizer=PromptTokenizer.from_checkpoint(settings.model),
                    max_requests=settings.max_batch_lines,
                )
        return self._input

    def _validate(self) -> BatchStatus | None:
        batch_input = self._read_input()
        if not batch_input.is_valid:
            return self._fail_validation(batch_input)
        moved = move_batch(
            self.session,
            self.batch.id,
            BatchStatus.IN_PROGRESS,
            from_statuses=(BatchStatus.VALIDATING,),
            total_requests=len(batch_input.requests),
        )
        self.session.commit()
        return BatchStatus.IN_PROGRESS if moved else self._status()

    def _fail_validation(self, batch_input: BatchInput) -> BatchStatus | None:
        errors = [error.as_dict() for error in batch_input.errors]
        moved = move_batch(
            self.session, self.batch.id, BatchStatus.FAILED, from_statuses=UNFINISHED, errors=errors
        )
        self.session.commit()
        return BatchStatus.FAILED if moved else self._status()

    # -- in_progress --------------------------------------------------------------------------

    def _run_requests(self) -> BatchStatus | None:
        batch_input = self._read_input()
        if not batch_input.is_valid:  # the input changed under a resumed batch: nothing safe to run
            return self._fail_validation(batch_input)
        done = finished_custom_ids(self.session, self.batch.id)
        self.session.commit()
        pending = [request for request in batch_input.requests if request.custom_id not in done]
        try:
            costing = self.costing  # reads the cap and the cost so far before anything runs
        except ValueError as error:
            return self.finish(
                BatchStatus.FAILED,
                UNFINISHED,
                code="batch_failed",
                message=str(error),
                errors=[
                    {
                        "code": "invalid_metadata",
                        "line": None,
                        "message": str(error),
                        "param": "metadata.max_cost",
                    }
                ],
            )
        generation = BatchGeneration(
            self.session, self.batch, costing, self.context.load_llm, self._should_stop
        )
        if pending and generation.run(pending):
            if self.context.shutdown_requested():
                raise _interruption(self.session, self.batch.id)
            return self._status()  # cancelling, or still in_progress and now expired
        # The engine answers every request; should one be missing, report it rather than hang.
        record_unfinished(
            self.session,
            self.batch,
            batch_input,
            code="server_error",
            message="The engine returned no result for this request.",
        )
        self.session.commit()
        moved = move_batch(
            self.session, self.batch.id, BatchStatus.FINALIZING, from_statuses=(BatchStatus.IN_PROGRESS,)
        )
        self.session.commit()
        return BatchStatus.FINALIZING if moved else self._status()

    def _should_stop(self) -> bool:
        if self.context.shutdown_requested() or self._is_expired():
            return True
        now_s = time.monotonic()
        if now_s - self._last_poll_s < self.context.status_poll_interval_s:
            return False
        self._last_poll_s = now_s
        return self._status() is not BatchStatus.IN_PROGRESS

    # -- endings ------------------------------------------------------------------------------

    def _expire(self) -> BatchStatus | None:
        window = self.batch.completion_window
        return self.finish(
            BatchStatus.EXPIRED,
            UNFINISHED,
            code="batch_expired",
            message=f"The batch expired (completion window {window}) before this request finished.",
        )

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
        try:
            batch_input = self._read_input()
        except Exception:  # an unreadable input must not keep the batch from ending
            batch_input = BatchInput(requests=[], errors=[])
        record_unfinished(self.session, self.batch, self._input, code=code, message=message)
        if batch_input.is_valid:
            values.setdefault("total_requests", len(batch_input.requests))
        return self._close(to_status, from_statuses, **values)

    def _close(
        self, to_status: BatchStatus, from_statuses: tuple[BatchStatus, ...], **values: object
    ) -> BatchStatus | None:
        storage = self.context.storage
        if close_batch(self.session, storage, self.batch, to_status, from_statuses, **values):
            return to_status
        return self._status()

    # -- helpers ------------------------------------------------------------------------------

    def _status(self) -> BatchStatus | None:
        status = current_status(self.session, self.batch.id)
        self.session.commit()  # end the read transaction: never sit in one during generation
        return status

    def _is_expired(self) -> bool:
        return utc_now() >= self.batch.expires_at

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
requests are error lines without usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from hybatch.batch_input import BatchInput, BatchRequest, validate_batch_input
from hybatch.batch_lifecycle import UNFINISHED, claim_batch, current_status, move_batch
from hybatch.batch_results import finished_custom_ids, record_failure, record_success, write_result_files
from hybatch.models import Batch, BatchStatus, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.result_lines import error_line
from hybatch.settings import Settings
from hybatch.storage import FileStorage, iter_chunks
from worker import engine_requests
from worker.costing import SKIPPED_BUDGET, X_BILLING, BatchCosting

if TYPE_CHECKING:
    from worker.engine import RequestOutput

STATUS_POLL_INTERVAL_S = 0.5
_CACHE_GAUGES = frozenset({"cached_tokens_device", "device_bytes", "bytes_per_cached_token", "hit_rate"})


class TextGenerator(Protocol):
    """What the job needs from ``worker.engine.LLM``."""

    def generate_stream(
        self,
        prompts: Sequence[dict[str, Any]],
        sampling_params: Sequence[Any],
        request_ids: Sequence[str],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[RequestOutput]: ...


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
    """The worker is shutting down; the batch was left unfinished, to be resumed by redelivery."""


def run_batch(batch_id: str, context: JobContext) -> BatchStatus | None:
    """Run the batch as far as it goes; returns its final status (None for an unknown batch).

    Safe to call again for the same batch at any point (redelivery): requests already recorded
    are skipped, and every status move is conditional. Raises ``JobInterrupted`` on shutdown.
    """
    with context.session_factory() as session:
        if not claim_batch(session, batch_id):
            return current_status(session, batch_id)
        return _BatchJob(session, context, batch_id).run()


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
            self.costing  # noqa: B018 (reads the cap and the cost so far before anything runs)
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
        if pending and self._generate(pending):
            if self.context.shutdown_requested():
                raise JobInterrupted(f"batch {self.batch.id}: the worker is shutting down")
            return self._status()  # cancelling, or still in_progress and now expired
        # The engine answers every request; should one be missing, report it rather than hang.
        self._record_unfinished(
            code="server_error", message="The engine returned no result for this request."
        )
        moved = move_batch(
            self.session, self.batch.id, BatchStatus.FINALIZING, from_statuses=(BatchStatus.IN_PROGRESS,)
        )
        self.session.commit()
        return BatchStatus.FINALIZING if moved else self._status()

    def _generate(self, pending: list[BatchRequest]) -> bool:
        """Run ``pending`` on the engine, recording each as it finishes; True if stopped early.

        Without a budget cap that is one engine call (continuous batching and the prefix cache see
        the whole batch). With ``metadata.max_cost`` the requests run in waves the cap admits;
        those it never admits end as ``skipped_budget`` error lines.
        """
        runnable: dict[str, BatchRequest] = {}
        params: dict[str, Any] = {}
        for request in pending:
            try:
                params[request.custom_id] = engine_requests.sampling_params(request)
            except ValueError as error:
                self._record_error(request, code="invalid_request", message=str(error))
                continue
            runnable[request.custom_id] = request
        waiting = list(runnable.values())
        while waiting:
            wave, waiting = self.costing.admit(waiting)
            if not wave:
                for request in waiting:
                    self._record_error(
                        request,
                        code=SKIPPED_BUDGET,
                        message=f"Skipped: running it could pass the batch's max_cost of {self.costing.max_cost}.",
                    )
                return False
            if self._run_wave(wave, [params[r.custom_id] for r in wave]):
                return True
        return False

    def _run_wave(self, wave: list[BatchRequest], params: list[Any]) -> bool:
        account_id = self.batch.account_id
        prompts = [engine_requests.engine_prompt(r, account_id=account_id) for r in wave]
        by_id = {r.custom_id: r for r in wave}
        was_stopped = False

        def should_stop() -> bool:
            nonlocal was_stopped
            was_stopped = was_stopped or self._should_stop()
            return was_stopped

        llm = self.context.load_llm()
        metrics_before = llm.cache_metrics() if hasattr(llm, "cache_metrics") else None
        outputs = llm.generate_stream(prompts, params, request_ids=list(by_id), should_stop=should_stop)
        try:
            with closing(outputs):  # an exception here aborts the engine's unfinished requests
                for output in outputs:
                    self._record_output(by_id[output.request_id], output)
        finally:
            if metrics_before is not None:
                self._add_cache_metrics(llm.cache_metrics().since(metrics_before).as_dict())
        return was_stopped

    def _add_cache_metrics(self, wave: dict[str, Any]) -> None:
        """Adds one engine call's prefix-cache counters to the batch's (gauges: the latest value)."""
        self.session.refresh(self.batch)
        merged = dict(self.batch.cache_metrics or {})
        for key, value in wave.items():
            merged[key] = value if key in _CACHE_GAUGES else merged.get(key, 0) + value
        merged["hit_rate"] = (
            merged["hit_tokens"] / merged["lookup_tokens"] if merged.get("lookup_tokens") else 0.0
        )
        self.batch.cache_metrics = merged
        self.session.commit()

    def _should_stop(self) -> bool:
        if self.context.shutdown_requested() or self._is_expired():
            return True
        now_s = time.monotonic()
        if now_s - self._last_poll_s < self.context.status_poll_interval_s:
            return False
        self._last_poll_s = now_s
        return self._status() is not BatchStatus.IN_PROGRESS

    def _record_output(self, request: BatchRequest, output: RequestOutput) -> None:
        if output.error is not None:
            self._record_error(request, code="invalid_request", message=output.error)
            return
        usage = engine_requests.token_usage(output)
        line = engine_requests.output_line(
            request, output, endpoint=self.batch.endpoint, model=self.batch.model, usage=usage
        )
        x_billing = self.costing.price(request, usage)  # before recording: not yet month-to-date
        if x_billing is not None:
            line[X_BILLING] = x_billing
        record_success(
            self.session,
            self.batch,
            custom_id=request.custom_id,
            line_number=request.line_number,
            line=line,
            usage=usage,
        )
        self.session.commit()

    def _record_error(self, request: BatchRequest, *, code: str, message: str) -> None:
        if self._costing is not None:
            self._costing.settle(request)
        line = error_line(request.custom_id, code=code, message=message)
        record_failure(
            self.session, self.batch, custom_id=request.custom_id, line_number=request.line_number, line=line
        )
        self.session.commit()

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
        self._record_unfinished(code=code, message=message, commit=False)
        if batch_input.is_valid:
            values.setdefault("total_requests", len(batch_input.requests))
        return self._close(to_status, from_statuses, **values)

    def _record_unfinished(self, *, code: str, message: str, commit: bool = True) -> None:
        if self._input is None or not self._input.is_valid:
            return
        done = finished_custom_ids(self.session, self.batch.id)
        for request in self._input.requests:
            if request.custom_id not in done:
                line = error_line(request.custom_id, code=code, message=message)
                record_failure(
                    self.session,
                    self.batch,
                    custom_id=request.custom_id,
                    line_number=request.line_number,
                    line=line,
                )
        if commit:
            self.session.commit()

    def _close(
        self, to_status: BatchStatus, from_statuses: tuple[BatchStatus, ...], **values: object
    ) -> BatchStatus | None:
        """Write the result files and move the batch, in one transaction; undo both if the move loses."""
        self.session.flush()
        self.session.refresh(self.batch)  # another delivery may have written the files already
        had_files = (self.batch.output_file_id, self.batch.error_file_id)
        files = write_result_files(self.session, self.context.storage, self.batch)
        if move_batch(self.session, self.batch.id, to_status, from_statuses=from_statuses, **values):
            self.session.commit()
            return to_status
        self.session.rollback()
        for file_id in (files.output_file_id, files.error_file_id):
            if file_id is not None and file_id not in had_files:
                self.context.storage.delete(file_id)
        return self._status()

    # -- helpers ------------------------------------------------------------------------------

    def _status(self) -> BatchStatus | None:
        status = current_status(self.session, self.batch.id)
        self.session.commit()  # end the read transaction: never sit in one during generation
        return status

    def _is_expired(self) -> bool:
        return utc_now() >= self.batch.expires_at

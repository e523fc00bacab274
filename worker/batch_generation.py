"""A batch's pending requests on the engine: the waves the budget admits, one transaction per result.

Without a budget cap that is one engine call (continuous batching and the prefix cache see the whole
batch). With ``metadata.max_cost`` the requests run in the waves the cap admits; those it never admits
end as ``skipped_budget`` error lines (``insufficient_credits`` when a prepaid account's balance
is what they do not fit). As each request finishes it is recorded and committed on its
own: an output line with ``x_billing`` and its usage record, or an error line without usage. Each
engine call's prefix-cache counters are added to the batch row. An embeddings batch runs its
requests through ``embed``, a group of requests per engine call (no prefix cache).

A shard records only while its worker holds the shard's lease: ``holds_lease`` renews it inside
each request's transaction, and when it says the lease was taken over the transaction is rolled
back and ``LeaseLost`` raised, so a worker that stalled past its lease records nothing more.

An engine that fails (``worker.engine.EngineFailure``: a tensor-parallel rank died) ends the run
with ``EngineFailed``: what was recorded stays, the requests it was running are neither recorded
nor billed, and the engine is asked nothing more (not even its cache counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.batch_input import BatchRequest
from hybatch.batch_results import record_failure, record_success
from hybatch.embeddings_body import EmbeddingRequest
from hybatch.models import Batch, BatchEndpoint
from hybatch.result_lines import TokenUsage, error_line
from worker import embeddings, engine_requests
from worker.costing import X_BILLING, BatchCosting

if TYPE_CHECKING:
    import torch

    from worker.engine import RequestOutput

_CACHE_GAUGES = frozenset({"cached_tokens_device", "device_bytes", "bytes_per_cached_token", "hit_rate"})


class LeaseLost(Exception):
    """Another worker took over the shard: stop without recording anything more."""


class EngineFailed(Exception):
    """The engine can run nothing more (``worker.engine.EngineFailure``, named in the message): this
    worker must stop using it. Requests recorded before it stay recorded; the others were not."""


@contextmanager
def _engine_failures() -> Iterator[None]:
    """Turns the engine's ``EngineFailure`` into ``EngineFailed``, so callers need not import torch."""
    try:
        yield
    except Exception as error:
        from worker.engine import EngineFailure  # already imported wherever an engine ran

        if isinstance(error, EngineFailure):
            raise EngineFailed(f"{type(error).__name__}: {error}") from error
        raise


class TextGenerator(Protocol):
    """What the job needs from ``worker.engine.LLM``."""

    def generate_stream(
        self,
        prompts: Sequence[dict[str, Any]],
        sampling_params: Sequence[Any],
        request_ids: Sequence[str],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[RequestOutput]: ...

    def embed(self, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]: ...


class BatchGeneration:
    """Runs requests of one batch and records their results; ``should_stop`` is asked between steps.

    ``costing`` must already be open (the cap and the cost so far read). ``load_llm`` is called once
    per wave, only when a wave has requests to run. ``holds_lease`` is called in each request's
    transaction just before it commits (it may renew the lease there); False aborts the run.
    """

    def __init__(
        self,
        session: Session,
        batch: Batch,
        costing: BatchCosting,
        load_llm: Callable[[], TextGenerator],
        should_stop: Callable[[], bool],
        holds_lease: Callable[[Session], bool] = lambda _session: True,
    ) -> None:
        self.session = session
        self.holds_lease = holds_lease
        self.batch = batch
        self.costing = costing
        self.load_llm = load_llm
        self.should_stop = should_stop

    def run(self, pending: list[BatchRequest]) -> bool:
        """Runs ``pending`` on the engine, recording each as it finishes; True if stopped early."""
        runnable: dict[str, BatchRequest] = {}
        params: dict[str, Any] = {}
        for request in pending:
            if isinstance(request.generation, EmbeddingRequest):
                runnable[request.custom_id] = request  # nothing is sampled
                continue
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
                    code, message = self.costing.refusal(request)
                    self._record_error(request, code=code, message=message)
                return False
            if self._run_wave(wave, params):
                return True
        return False

    def _run_wave(self, wave: list[BatchRequest], params: dict[str, Any]) -> bool:
        if self.batch.endpoint is BatchEndpoint.EMBEDDINGS:
            return self._run_embeddings(wave)
        return self._run_generation(wave, [params[r.custom_id] for r in wave])

    def _run_embeddings(self, wave: list[BatchRequest]) -> bool:
        llm = self.load_llm()
        for group in embeddings.request_groups(wave, embeddings.TOKENS_PER_CALL):
            if self.should_stop():
                return True
            with _engine_failures():
                results = embeddings.embed_requests(llm, group)
            for result in results:
                request = result.request
                if result.error is not None:
                    self._record_error(request, code="invalid_request", message=result.error)
                    continue
                usage = embeddings.token_usage(request.generation)
                line = embeddings.embedding_line(
                    request.custom_id, request.generation, result.vectors, model=self.batch.model, usage=usage
                )
                self._record_line(request, line, usage)
        return False

    def _run_generation(self, wave: list[BatchRequest], params: list[Any]) -> bool:
        account_id = self.batch.account_id
        prompts = [engine_requests.engine_prompt(r, account_id=account_id) for r in wave]
        by_id = {r.custom_id: r for r in wave}
        was_stopped = False

        def should_stop() -> bool:
            nonlocal was_stopped
            was_stopped = was_stopped or self.should_stop()
            return was_stopped

        llm = self.load_llm()
        metrics_before = None
        try:
            # A rank that died since the last call fails the first of these.
            with _engine_failures():
                metrics_before = llm.cache_metrics() if hasattr(llm, "cache_metrics") else None
                outputs = llm.generate_stream(
                    prompts, params, request_ids=list(by_id), should_stop=should_stop
                )
                with closing(outputs):  # an exception here aborts the engine's unfinished requests
                    for output in outputs:
                        self._record_output(by_id[output.request_id], output)
        except EngineFailed:
            metrics_before = None  # a failed engine is asked nothing more
            raise
        finally:
            if metrics_before is not None:
                with _engine_failures():
                    metrics_after = llm.cache_metrics()
                self._add_cache_metrics(metrics_after.since(metrics_before).as_dict())
        return was_stopped

    def _add_cache_metrics(self, wave: dict[str, Any]) -> None:
        """Adds one engine call's prefix-cache counters to the batch's (gauges: the latest value)."""
        self.session.rollback()  # a LeaseLost may have left a transaction to undo
        # Shards of one batch finish at once on several workers: write-lock the row before reading
        # it (an UPDATE takes the row lock on Postgres, the write lock on SQLite), or two merges race.
        self.session.execute(
            sa.update(Batch).where(Batch.id == self.batch.id).values(cache_metrics=Batch.cache_metrics)
        )
        self.session.refresh(self.batch)
        merged = dict(self.batch.cache_metrics or {})
        for key, value in wave.items():
            merged[key] = value if key in _CACHE_GAUGES else merged.get(key, 0) + value
        merged["hit_rate"] = (
            merged["hit_tokens"] / merged["lookup_tokens"] if merged.get("lookup_tokens") else 0.0
        )
        self.batch.cache_metrics = merged
        self.session.commit()

    def _record_output(self, request: BatchRequest, output: RequestOutput) -> None:
        if output.error is not None:
            self._record_error(request, code="invalid_request", message=output.error)
            return
        usage = engine_requests.token_usage(output)
        line = engine_requests.output_line(
            request, output, endpoint=self.batch.endpoint, model=self.batch.model, usage=usage
        )
        self._record_line(request, line, usage)

    def _record_line(self, request: BatchRequest, line: dict[str, Any], usage: TokenUsage) -> None:
        cost = self.costing.price(request, usage)  # before recording: not yet month-to-date
        if cost is not None:
            line[X_BILLING] = cost.as_x_billing()
        record_success(
            self.session,
            self.batch,
            custom_id=request.custom_id,
            line_number=request.line_number,
            line=line,
            usage=usage,
            price=None if cost is None else cost.line_price(),
        )
        self._commit()

    def _record_error(self, request: BatchRequest, *, code: str, message: str) -> None:
        self.costing.settle(request)
        line = error_line(request.custom_id, code=code, message=message)
        record_failure(
            self.session, self.batch, custom_id=request.custom_id, line_number=request.line_number, line=line
        )
        self._commit()

    def _commit(self) -> None:
        if not self.holds_lease(self.session):
            self.session.rollback()
            raise LeaseLost(f"batch {self.batch.id}: another worker took over this shard")
        self.session.commit()

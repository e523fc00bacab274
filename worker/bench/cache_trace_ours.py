"""This repository's prefix cache under ``bench cache-trace``: the real engine loop, no model.

Each trace batch is one engine call, as the worker makes it: the batch is planned
(``plan_batch``: depth-first order, branch points, who waits for whom) and its requests go through
``LLMEngine.add_request`` / ``step`` with the default cache settings, chat requests with windows
planned at their message boundaries. The model runner is replaced by one that builds no tensors and
returns a logits row per finished prompt, so the scheduler, the KV-cache manager, window retention
and eviction all run as in production on block ids alone.
Requests run one at a time (``max_num_seqs = 1``), like the peers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.bench.cache_trace_memory import PRO_CONFIG, Budget, BudgetTooSmall, Holding, KVBytes
from worker.bench.cache_trace_workloads import TraceRequest
from worker.engine.kv_layout import KVCacheLayout
from worker.engine.llm_engine import LLMEngine
from worker.engine.model_runner import ScheduledSeq, StepLogits
from worker.engine.outputs import RequestError
from worker.engine.sampling_params import SamplingParams
from worker.engine.scheduler import SchedulerConfig
from worker.kv_cache.planner import plan_batch
from worker.model.config import ModelConfig

_PARAMS = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)


class _ModelFreeRunner:
    """The model runner's interface without a model: pools of ``layout`` but no KV tensors, and a
    one-column logits row (argmax: token 0) for every sequence a step completes."""

    def __init__(self, layout: KVCacheLayout):
        self.layout = layout
        self.transfer = None  # no tensors to copy: host and disk tiers stay off

    def execute(self, batch: list[ScheduledSeq], all_logits: bool = False) -> StepLogits:
        completing = sum(1 for item in batch if item.completes)
        return StepLogits(torch.zeros(completing, 1), None)


class OurCache:
    name = "hybatch"

    def __init__(self, kv: KVBytes, budget: Budget, chunk_tokens: int, message_boundaries: bool = True):
        """``message_boundaries``: plan windows where a request's chat messages end, as ``LLM`` does
        for a prompt dict's ``message_boundaries`` (off: every request is a plain prompt)."""
        self.kv = kv
        self.message_boundaries = message_boundaries
        layout = KVCacheLayout(
            kv.block_size,
            budget.full_bytes // kv.full_block_bytes,
            budget.swa_bytes // kv.swa_block_bytes,
            kv.full_block_bytes,
            kv.swa_block_bytes,
        )
        config = ModelConfig.from_dict(PRO_CONFIG)
        self.engine = LLMEngine(
            config,
            _ModelFreeRunner(layout),
            None,
            SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=chunk_tokens),
            max_model_len=config.max_position_embeddings,
            eos_token_ids=(),
            enable_prefix_caching=True,
        )
        self._num_batches = 0

    def serve_batch(self, batch: Sequence[TraceRequest]) -> int:
        """Runs one batch as one planned engine call; returns its cache-hit prompt tokens."""
        prefix = f"b{self._num_batches}-"
        self._num_batches += 1
        plans = plan_batch([list(r.token_ids) for r in batch], [r.salt for r in batch], self.kv.block_size)
        for plan in plans:
            request = batch[plan.index]
            try:
                self.engine.add_request(
                    f"{prefix}{plan.index}",
                    list(request.token_ids),
                    _PARAMS,
                    cache_salt=request.salt,
                    retain_at=plan.retain_at,
                    wait_for=None
                    if plan.wait_for is None
                    else (f"{prefix}{plan.wait_for[0]}", plan.wait_for[1]),
                    message_boundaries=self._boundary_windows(request),
                )
            except RequestError as exc:
                raise BudgetTooSmall(f"{self.name}: {exc}") from exc
        hit_tokens = 0
        try:
            while self.engine.has_unfinished():
                hit_tokens += sum(out.num_cached_tokens for out in self.engine.step())
        except RuntimeError as exc:  # the scheduler: no sequence fits the pools on its own
            raise BudgetTooSmall(f"{self.name}: {exc}") from exc
        return hit_tokens

    def _boundary_windows(self, request: TraceRequest) -> frozenset[int]:
        # As LLM._boundary_windows: each offset rounded down to a block boundary, the deepest point
        # a later prompt that repeats the messages so far can resume at.
        if not self.message_boundaries:
            return frozenset()
        size = self.kv.block_size
        return frozenset(end // size * size for end in request.message_ends if end >= size)

    def holding(self) -> Holding:
        """Between batches every used block is the cache's."""
        blocks = self.engine.blocks
        return Holding(
            blocks.full.num_used * self.kv.block_size,
            blocks.full.num_used * self.kv.full_block_bytes + blocks.swa.num_used * self.kv.swa_block_bytes,
        )

"""The engine loop: ``step()`` = schedule → run the model → sample and post-process."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from worker.engine.model_runner import ModelRunner, ScheduledSeq
from worker.engine.outputs import CompletionOutput, RequestError, RequestOutput
from worker.engine.sampler import sample
from worker.engine.sampling_params import SamplingParams
from worker.engine.scheduler import Scheduler, SchedulerConfig
from worker.engine.sequence import Sequence, SequenceStatus
from worker.engine.stop_strings import StopStringMatcher
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.disk_store import DiskStore
from worker.kv_cache.host_store import HostStore
from worker.kv_cache.kv_cache_manager import KVCacheManager
from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.shared_tier import SharedTier
from worker.model.config import ModelConfig
from worker.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStats:
    num_steps: int
    num_prompt_tokens_computed: int
    num_generated_tokens: int
    num_preemptions: int
    max_swa_blocks_held: int  # the most SWA blocks any one sequence held after allocation


class LLMEngine:
    def __init__(
        self,
        config: ModelConfig,
        runner: ModelRunner,
        tokenizer: Tokenizer | None,
        scheduler_config: SchedulerConfig,
        max_model_len: int,
        eos_token_ids: tuple[int, ...],
        enable_prefix_caching: bool = False,
        retain_every_tokens: int | None = None,
        host_store: HostStore | None = None,
        disk_store: DiskStore | None = None,
        opportunistic_windows: bool = True,
        shared_store: SharedTier | None = None,
    ):
        self.config = config
        self.runner = runner
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids
        layout = runner.layout
        window = config.sliding_window if config.swa_layers else 0
        self.blocks = BlockManager(layout.block_size, layout.num_full_blocks, layout.num_swa_blocks, window)
        self.cache = (
            PrefixCache(
                self.blocks,
                retain_every_tokens,
                runner.transfer,
                host_store,
                disk_store,
                opportunistic_windows,
                shared_store,
            )
            if enable_prefix_caching
            else None
        )
        self.kv = KVCacheManager(self.blocks, self.cache)
        self.scheduler = Scheduler(scheduler_config, self.kv)
        self._seqs: dict[str, Sequence] = {}
        self._arrivals = 0
        self._steps = 0
        self._prompt_tokens_computed = 0
        self._generated = 0
        self._max_swa_held = 0

    # -- requests --------------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        prompt: str | None = None,
        cache_salt: str | None = None,
        retain_at: frozenset[int] = frozenset(),
        wait_for: tuple[str, int] | None = None,
        message_boundaries: frozenset[int] = frozenset(),
    ) -> None:
        """Queues a request; raises ``RequestError`` (naming it) when it cannot run.

        ``retain_at`` are block-aligned positions where the prefix cache keeps a sliding window;
        ``wait_for = (request_id, n)`` holds this request back until that request has computed ``n``
        tokens (it computes the prefix both share), so this one resumes from the cache;
        ``message_boundaries`` are block-aligned ends of chat messages, where the cache keeps windows
        it drops before the planned ones (they pay off only when a conversation branches there).
        """
        if request_id in self._seqs:
            raise RequestError(f"request {request_id}: duplicate request id")
        self._check_request(request_id, prompt_token_ids, params)
        generator = None
        if not params.is_greedy:
            generator = torch.Generator()
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        seq = Sequence(
            request_id=request_id,
            prompt=prompt,
            prompt_token_ids=list(prompt_token_ids),
            params=params
            if params.eos_token_ids or params.ignore_eos
            else params.with_eos(self.eos_token_ids),
            arrival=self._arrivals,
            cache_salt=cache_salt,
            retain_at=frozenset(retain_at),
            message_boundaries=frozenset(message_boundaries),
            generator=generator,
            stop_matcher=StopStringMatcher(params.stop)
            if params.stop and self.tokenizer is not None
            else None,
        )
        if wait_for is not None and wait_for[0] in self._seqs:
            seq.wait_for = (self._seqs[wait_for[0]], wait_for[1])
        self._arrivals += 1
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def _check_request(self, request_id: str, token_ids: list[int], params: SamplingParams) -> None:
        if not token_ids:
            raise RequestError(f"request {request_id}: the prompt is empty")
        vocab = self.config.vocab_size
        bad = [t for t in token_ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab]
        if bad:
            raise RequestError(
                f"request {request_id}: token id {bad[0]!r} is outside the vocabulary [0, {vocab})"
            )
        total = len(token_ids) + params.max_tokens
        if total > self.max_model_len:
            raise RequestError(
                f"request {request_id}: prompt ({len(token_ids)} tokens) plus max_tokens ({params.max_tokens}) "
                f"is {total}, beyond the context length {self.max_model_len}"
            )
        block_size = self.runner.layout.block_size
        if math.ceil(total / block_size) > self.blocks.full.num_blocks and self.config.full_layers:
            raise RequestError(
                f"request {request_id}: needs {math.ceil(total / block_size)} KV blocks but the cache holds "
                f"{self.blocks.full.num_blocks}; raise the KV cache budget"
            )

    def begin_call(self) -> None:
        """Marks the start of one caller's unit of work (an ``LLM.generate`` call: a batch or a shard
        of one): the cache's metrics tell hits on entries cached before it from hits within it."""
        if self.cache is not None:
            self.cache.begin_call()

    def abort(self, request_id: str) -> None:
        seq = self._seqs.pop(request_id, None)
        if seq is not None and not seq.is_finished:
            self.scheduler.abort(seq)

    def abort_all(self) -> list[str]:
        ids = [rid for rid, seq in self._seqs.items() if not seq.is_finished]
        for rid in ids:
            self.abort(rid)
        return ids

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- the loop --------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Runs one batch; returns the requests that finished in it."""
        batch = self.scheduler.schedule()
        if not batch:
            return []
        want_all = any(item.seq.params.prompt_logprobs for item in batch)
        for item in batch:
            self._max_swa_held = max(self._max_swa_held, len(item.seq.swa_blocks))
        logits = self.runner.execute(batch, all_logits=want_all)
        completing = [item.seq for item in batch if item.completes]
        new_tokens = sample(logits.sampled, completing) if completing else []
        if want_all:
            self._collect_prompt_logprobs(batch, logits.all_rows)
        self._steps += 1
        finished = []
        sampled = dict(zip(map(id, completing), new_tokens, strict=True))
        for item in batch:
            seq = item.seq
            if seq.num_computed_tokens < seq.prompt_len:
                self._prompt_tokens_computed += min(item.num_tokens, seq.prompt_len - seq.num_computed_tokens)
            self.kv.advance(seq, item.num_tokens)
            if id(seq) in sampled:
                self._append_token(seq, sampled[id(seq)])
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
                finished.append(self._output(seq))
                del self._seqs[seq.request_id]
        return finished

    def _collect_prompt_logprobs(self, batch: list[ScheduledSeq], rows: torch.Tensor) -> None:
        logprobs = torch.log_softmax(rows, dim=-1)
        start = 0
        for item in batch:
            seq, lo = item.seq, item.seq.num_computed_tokens
            if seq.params.prompt_logprobs:
                for offset in range(item.num_tokens):
                    target = lo + offset + 1
                    if target < seq.prompt_len:
                        seq.prompt_logprobs.append(float(logprobs[start + offset, seq.token_ids[target]]))
            start += item.num_tokens

    def _append_token(self, seq: Sequence, token: int) -> None:
        seq.token_ids.append(token)
        self._generated += 1
        params = seq.params
        if not params.ignore_eos and token in params.eos_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", None
        elif token in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", token
        elif seq.stop_matcher is not None and self._hit_stop_string(seq):
            seq.finish_reason = "stop"
        elif seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            seq.finish_reason = "length"

    def _hit_stop_string(self, seq: Sequence) -> bool:
        hit = seq.stop_matcher.step(self.tokenizer.decode, seq.token_ids, start=seq.prompt_len)
        if hit is None:
            return False
        seq.output_text, seq.stop_reason = hit.text, hit.stop
        return True

    def _output(self, seq: Sequence) -> RequestOutput:
        output_ids = seq.output_token_ids
        if seq.finish_reason == "stop" and seq.stop_reason is None and output_ids:
            output_ids_for_text = output_ids[:-1]  # the eos token itself is not part of the text
        else:
            output_ids_for_text = output_ids
        if isinstance(seq.stop_reason, str):
            text = seq.output_text
        elif self.tokenizer is not None:
            text = self.tokenizer.decode(output_ids_for_text)
        else:
            text = ""
        return RequestOutput(
            request_id=seq.request_id,
            prompt=seq.prompt,
            prompt_token_ids=seq.prompt_token_ids,
            outputs=[CompletionOutput(0, text, list(output_ids), seq.finish_reason, seq.stop_reason)],
            num_cached_tokens=seq.num_cached_tokens,
            finished=True,
            prompt_logprobs=list(seq.prompt_logprobs) if seq.params.prompt_logprobs else None,
        )

    def stats(self) -> EngineStats:
        return EngineStats(
            self._steps,
            self._prompt_tokens_computed,
            self._generated,
            self.scheduler.num_preemptions,
            self._max_swa_held,
        )

    def check_integrity(self) -> None:
        running = [s for s in self._seqs.values() if s.status is SequenceStatus.RUNNING]
        self.kv.check_integrity(running)

"""``LLM``: the offline entry point, shaped like vLLM's.

llm = LLM("path/to/checkpoint", device="cpu", dtype="float32")
outs = llm.generate([{"prompt_token_ids": [1, 2, 3], "cache_salt": "acct_42"}, "some text"],
                    SamplingParams(temperature=0.0, max_tokens=32))

A prompt dict may also carry ``message_boundaries``: token offsets where chat messages end (the
worker's chat rendering knows them); the prefix cache keeps a planned window there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from worker.engine.kv_layout import DEFAULT_SWA_SHARE, GIB, plan_layout
from worker.engine.llm_engine import EngineStats, LLMEngine
from worker.engine.outputs import RequestError, RequestOutput
from worker.engine.ranks import RankSpec, start_ranks
from worker.engine.sampling_params import SamplingParams
from worker.engine.scheduler import SchedulerConfig
from worker.kv_cache.disk_store import DiskStore
from worker.kv_cache.host_store import HostStore
from worker.kv_cache.metrics import CacheMetrics, snapshot
from worker.kv_cache.planner import plan_batch
from worker.kv_cache.shared_tier import open_shared_tier
from worker.model.config import CheckpointError, ModelConfig
from worker.model.loader import parse_dtype
from worker.model.tensor_parallel import check_shardable, local_kv_config
from worker.model.tokenizer import Tokenizer

log = logging.getLogger(__name__)

PromptType = str | dict | list[int]


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _eos_ids(checkpoint: Path, config: ModelConfig, tokenizer: Tokenizer | None) -> tuple[int, ...]:
    ids: list[int] = []
    gen = checkpoint / "generation_config.json"
    if gen.is_file():
        value = json.loads(gen.read_text()).get("eos_token_id")
        ids += [value] if isinstance(value, int) else list(value or [])
    ids += list(config.eos_token_ids)
    if tokenizer is not None and tokenizer.token_to_id(tokenizer.eos_token) is not None:
        ids.append(tokenizer.token_to_id(tokenizer.eos_token))
    return tuple(dict.fromkeys(ids))


class LLM:
    """Loads a checkpoint and serves ``generate`` / ``generate_stream`` with continuous batching.

    ``kv_cache_gb`` sizes both KV pools, ``kv_swa_share`` of its bytes for the sliding-window pool
    (``plan_layout``; None: ``DEFAULT_SWA_SHARE``); ``num_full_blocks`` / ``num_swa_blocks``
    override the split (tests use them to force preemption). ``max_num_batched_tokens`` is the
    per-step token budget (the chunked-prefill chunk size). ``opportunistic_windows`` keeps the sliding-window KV a
    sequence leaves behind as spare cache windows while the SWA pool has room (docs/kv-cache.md).
    ``tensor_parallel_size`` runs the model over that many ranks (processes; one GPU each on CUDA),
    ``expert_parallel`` spreads whole MoE experts over them (``ranks.py``, ``tensor_parallel.py``);
    the KV budgets are then per rank. A rank that dies makes every later call raise ``EngineFailure``.
    The shared tier (``shared_tier.py``) is a directory (``shared_cache_dir``) or a bucket
    (``shared_cache_url`` = ``s3://bucket/prefix``, at ``s3_endpoint_url`` in ``s3_region``;
    credentials from boto3's chain).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        enable_prefix_caching: bool = False,
        kv_cache_gb: float = 1.0,
        kv_swa_share: float | None = None,
        block_size: int = 16,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        num_full_blocks: int | None = None,
        num_swa_blocks: int | None = None,
        attention_backend: str = "auto",
        retain_every_tokens: int | None = None,
        plan_batches: bool = True,
        host_cache_gb: float = 0.0,
        disk_cache_dir: str | Path | None = None,
        disk_cache_gb: float = 0.0,
        shared_cache_dir: str | Path | None = None,
        shared_cache_url: str | None = None,
        s3_endpoint_url: str | None = None,
        s3_region: str | None = None,
        overlap_loads: bool = True,
        opportunistic_windows: bool = True,
        tensor_parallel_size: int = 1,
        expert_parallel: bool = False,
    ):
        if shared_cache_dir and shared_cache_url:
            raise ValueError("shared_cache_dir and shared_cache_url name two shared tiers: pass one")
        self.checkpoint = Path(model)
        self.device = resolve_device(device)
        torch_dtype = parse_dtype(
            ("float32" if self.device.type == "cpu" else "bfloat16") if dtype == "auto" else dtype
        )
        self.config = ModelConfig.from_dir(self.checkpoint)
        self.tokenizer = (
            Tokenizer(self.checkpoint) if (self.checkpoint / "tokenizer.json").is_file() else None
        )
        check_shardable(self.config, tensor_parallel_size, expert_parallel)
        if max_num_batched_tokens is None:
            max_num_batched_tokens = 512 if self.device.type == "cpu" else 8192
        layout = plan_layout(
            local_kv_config(self.config, tensor_parallel_size),  # KV budgets are per rank
            torch_dtype,
            block_size=block_size,
            kv_cache_bytes=int(kv_cache_gb * GIB),
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            swa_share=DEFAULT_SWA_SHARE if kv_swa_share is None else kv_swa_share,
            num_full_blocks=num_full_blocks,
            num_swa_blocks=num_swa_blocks,
        )
        spec = RankSpec(
            str(self.checkpoint),
            torch_dtype,
            self.device.type,
            tensor_parallel_size,
            expert_parallel,
            layout,
            attention_backend,
            overlap_loads,
        )
        self.model, runner, self.followers = start_ranks(spec, self.device)
        self.disk_store, shared_store = None, None
        wants_disk = enable_prefix_caching and disk_cache_dir and disk_cache_gb > 0
        wants_shared = enable_prefix_caching and (shared_cache_dir or shared_cache_url)
        if wants_disk or wants_shared:
            namespace = cache_namespace(self.checkpoint, torch_dtype, block_size, tensor_parallel_size)
            if wants_disk:
                self.disk_store = DiskStore(disk_cache_dir, int(disk_cache_gb * GIB), namespace)
            if wants_shared:
                shared_store = open_shared_tier(
                    namespace,
                    shared_cache_dir,
                    shared_cache_url,
                    s3_endpoint_url=s3_endpoint_url,
                    s3_region=s3_region,
                )
        self.engine = LLMEngine(
            self.config,
            runner,
            self.tokenizer,
            SchedulerConfig(max_num_seqs, max_num_batched_tokens),
            max_model_len=min(
                max_model_len or self.config.max_position_embeddings, self.config.max_position_embeddings
            ),
            eos_token_ids=_eos_ids(self.checkpoint, self.config, self.tokenizer),
            enable_prefix_caching=enable_prefix_caching,
            retain_every_tokens=retain_every_tokens,
            host_store=HostStore(int(host_cache_gb * GIB)) if enable_prefix_caching else None,
            disk_store=self.disk_store,
            shared_store=shared_store,
            opportunistic_windows=opportunistic_windows,
        )
        self.plan_batches = plan_batches and enable_prefix_caching
        self._next_id = 0

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def get_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise CheckpointError(f"{self.checkpoint}: no tokenizer.json, so text prompts are not available")
        return self.tokenizer

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> list[RequestOutput]:
        """Runs every prompt to completion; returns outputs in the order of ``prompts``.

        A request that cannot run comes back with ``error`` set; the others are unaffected.
        """
        prompts = _as_list(prompts)
        ids = self._request_ids(len(prompts), request_ids)
        by_id = {out.request_id: out for out in self.generate_stream(prompts, sampling_params, ids)}
        return [by_id[i] for i in ids]

    def generate_stream(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        request_ids: Sequence[str] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[RequestOutput]:
        """Yields each request's output as soon as it finishes (rejected requests first).

        ``should_stop`` is asked between engine steps; when it returns True the unfinished requests are
        aborted and the iteration ends without them. Closing the iterator early aborts them too.
        """
        prompts = _as_list(prompts)
        ids = self._request_ids(len(prompts), request_ids)
        params = _params_list(sampling_params, len(prompts))
        self.engine.begin_call()
        parsed = []
        try:
            boundaries: dict[str, frozenset[int]] = {}  # request id -> windows at message boundaries
            for request_id, prompt, param in zip(ids, prompts, params, strict=True):
                try:
                    text, token_ids, salt = self._parse_prompt(request_id, prompt)
                    if isinstance(param, dict):
                        param = _params_from_dict(request_id, param)
                    boundaries[request_id] = self._boundary_windows(request_id, prompt, len(token_ids))
                    parsed.append((request_id, text, token_ids, salt, param))
                except (RequestError, ValueError) as exc:
                    yield _error_output(request_id, prompt, _name_request(request_id, exc))
            for request_id, text, token_ids, salt, param, retain_at, wait_for in self._planned(parsed):
                try:
                    self.engine.add_request(
                        request_id,
                        token_ids,
                        param,
                        prompt=text,
                        cache_salt=salt,
                        retain_at=retain_at,
                        wait_for=wait_for,
                        message_boundaries=boundaries[request_id],
                    )
                except (RequestError, ValueError) as exc:
                    yield _error_output(request_id, text, _name_request(request_id, exc))
            while self.engine.has_unfinished():
                if should_stop is not None and should_stop():
                    return
                yield from self.engine.step()
        finally:
            self.engine.abort_all()
            if self.engine.cache is not None:
                self.engine.cache.publish_call()  # to the shared tier, if on: other workers hit it

    def embed(self, prompts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Unit-length float32 ``[hidden_size]`` embeddings of token-id prompts; see ``embed.py``.

        Runs on scratch KV (the prefix cache is neither read nor written); raises ValueError for an
        empty prompt or one longer than ``max_model_len``.
        """
        if any(len(prompt) > self.max_model_len for prompt in prompts):
            raise ValueError(f"an embedding prompt is longer than the model's {self.max_model_len} tokens")
        return self.engine.runner.embed(prompts, self.engine.scheduler.config.max_num_batched_tokens)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def cache_metrics(self) -> CacheMetrics:
        """Prefix-cache counters and gauges now (all zero when prefix caching is off)."""
        return snapshot(self.engine.cache)

    def close(self) -> None:
        """Writes the prefix cache to the disk tier (if any) so a restarted worker finds it warm, and
        publishes it to the shared tier (if on) so other workers find it; stops the other ranks.
        After an ``EngineFailure`` only the ranks are stopped: the device KV cannot be read back."""
        cache = self.engine.cache
        failed = self.followers is not None and self.followers.failure is not None
        try:
            if (
                cache is not None
                and not failed
                and (self.disk_store is not None or cache.tiers.shared is not None)
            ):
                cache.persist()
            if self.disk_store is not None:
                self.disk_store.close()
        finally:
            if self.followers is not None:
                self.followers.close()

    def _planned(self, parsed: list[tuple]) -> list[tuple]:
        """Depth-first order over the call's prompt tree, with branch points and dependencies."""
        if not self.plan_batches or len(parsed) < 2:
            return [(*p, frozenset(), None) for p in parsed]
        plans = plan_batch(
            [p[2] for p in parsed], [p[3] for p in parsed], self.engine.runner.layout.block_size
        )
        return [
            (
                *parsed[plan.index],
                plan.retain_at,
                None if plan.wait_for is None else (parsed[plan.wait_for[0]][0], plan.wait_for[1]),
            )
            for plan in plans
        ]

    def _boundary_windows(self, request_id: str, prompt: PromptType, prompt_len: int) -> frozenset[int]:
        """Block boundaries to retain a window at for a prompt dict's ``message_boundaries``: token
        offsets where a chat message ends (the system prompt, each turn), where later prompts that
        repeat the conversation so far part from this one. Each is rounded down to a block boundary,
        the deepest point such a prompt can resume at."""
        if not isinstance(prompt, dict) or "message_boundaries" not in prompt:
            return frozenset()
        offsets = prompt["message_boundaries"]
        if not isinstance(offsets, list) or not all(
            isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= prompt_len for o in offsets
        ):
            raise RequestError(
                f"request {request_id}: message_boundaries must be a list of token offsets in [0, {prompt_len}]"
            )
        block_size = self.engine.runner.layout.block_size
        return frozenset(o // block_size * block_size for o in offsets if o >= block_size)

    def _request_ids(self, n: int, request_ids: Sequence[str] | None) -> list[str]:
        if request_ids is not None:
            if len(request_ids) != n:
                raise ValueError(f"{len(request_ids)} request ids for {n} prompts")
            return [str(r) for r in request_ids]
        first = self._next_id
        self._next_id += n
        return [str(i) for i in range(first, first + n)]

    def _parse_prompt(self, request_id: str, prompt: PromptType) -> tuple[str | None, list[int], str | None]:
        salt = None
        if isinstance(prompt, dict):
            salt = prompt.get("cache_salt")
            if "prompt_token_ids" in prompt:
                token_ids = prompt["prompt_token_ids"]
                if not isinstance(token_ids, list):
                    raise RequestError(f"request {request_id}: prompt_token_ids must be a list of ints")
                return prompt.get("prompt"), list(token_ids), salt
            if "prompt" not in prompt:
                raise RequestError(
                    f"request {request_id}: a prompt dict needs 'prompt' or 'prompt_token_ids'"
                )
            prompt = prompt["prompt"]
        if isinstance(prompt, list):
            return None, list(prompt), salt
        if not isinstance(prompt, str):
            raise RequestError(f"request {request_id}: a prompt must be text, token ids or a dict")
        if not prompt:
            raise RequestError(f"request {request_id}: the prompt is empty")
        return prompt, self.get_tokenizer().encode(prompt, add_special_tokens=True), salt


def cache_namespace(
    checkpoint: Path, dtype: torch.dtype, block_size: int, tensor_parallel_size: int = 1
) -> str:
    """Names the KV a checkpoint produces: config, weight files (headers and edges of their data), dtype,
    block size and, with several ranks, their number (it orders a payload's heads). A disk cache
    written under another namespace is never read."""
    h = hashlib.blake2b(digest_size=8)
    h.update((checkpoint / "config.json").read_bytes())
    for path in sorted(checkpoint.glob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read())
    ranks = f"-tp{tensor_parallel_size}" if tensor_parallel_size > 1 else ""
    return f"{checkpoint.name}-{h.hexdigest()}-{str(dtype).removeprefix('torch.')}-b{block_size}{ranks}"


def _name_request(request_id: str, exc: Exception) -> str:
    message = str(exc)
    return message if message.startswith(f"request {request_id}:") else f"request {request_id}: {message}"


def _as_list(prompts) -> list:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(p, int) for p in prompts):
        return [prompts]  # a single prompt of token ids
    return prompts


def _params_list(sampling_params, n: int) -> list:
    if sampling_params is None:
        return [SamplingParams()] * n
    if isinstance(sampling_params, (SamplingParams, dict)):
        return [sampling_params] * n
    params = list(sampling_params)
    if len(params) != n:
        raise ValueError(f"{len(params)} sampling params for {n} prompts")
    return params


def _params_from_dict(request_id: str, raw: dict) -> SamplingParams:
    try:
        return SamplingParams(**raw)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"request {request_id}: {exc}") from exc


def _error_output(request_id: str, prompt, message: str) -> RequestOutput:
    text = prompt if isinstance(prompt, str) else None
    return RequestOutput(request_id=request_id, prompt=text, prompt_token_ids=[], error=message)

"""``hybatch bench cache-trace``: cache hits across batches at equal memory, this cache vs its peers.

Multi-batch traces (``cache_trace_workloads.py``: one system prompt over many batches, documents
asked several questions over time, growing conversations, unshared traffic, and a mix of all four)
are replayed on token ids alone, no model, through

    hybatch       this repository's engine loop and prefix cache (``cache_trace_ours.py``)
    vLLM hybrid   vLLM's hybrid allocator: every block of every layer cached, one LRU free queue,
                  out-of-window SWA blocks freed first (``cache_trace_vllm.py``)
    SGLang        SGLang's SWA radix cache: full + SWA per node, SWA tombstoned, LRU on both; its
                  SWA:full token ratio is tuned per budget, best of ``--sglang-ratios``
                  (``cache_trace_sglang.py``)
    every layer   a radix cache of all 70 layers with no SWA awareness (``cache_trace_every_layer.py``)

each with the same device memory per budget (``TOTAL`` GB, which this cache splits between its two
pools as the worker's engine does, or ``FULL+SWA`` GB to choose the split; every peer gets the total) on the MiMo-V2.5-Pro KV shape (``cache_trace_memory.py``). Per workload and budget
it prints the hit ratio (hit ÷ prompt tokens) and the prompt tokens computed, ours ÷ the best
peer in hit tokens, and the capacity multiplier
(cached tokens per byte at the end vs caching every layer). ``unbounded`` is the every-layer cache
with memory to spare: every hit the trace allows; memory binds where the best peer falls short of it.

    python -m worker.bench.cache_trace                        # the recorded run (docs/performance.md)
    python -m worker.bench.cache_trace --scale 0.25 --budgets 2+2,8+4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.bench.cache_trace_every_layer import EveryLayerCache
from worker.bench.cache_trace_memory import Budget, BudgetTooSmall, Holding, KVBytes, pro_kv_bytes
from worker.bench.cache_trace_sglang import SglangSwaRadixCache
from worker.bench.cache_trace_vllm import VllmHybridCache
from worker.bench.cache_trace_workloads import Trace, TraceRequest, default_workloads, mix
from worker.kv_cache.planner import plan_batch

DEFAULT_BUDGETS = "4,8,12,20,40,80"
UNBOUNDED_BYTES = 10**15
BINDS_BELOW = 0.99  # memory binds where the best peer hits under 99% of what the trace allows


class CachePolicy(Protocol):
    """What every policy of the bench offers (ours and each peer)."""

    name: str

    def serve_batch(self, batch: Sequence[TraceRequest]) -> int:
        """Runs one batch; returns its cache-hit prompt tokens. Raises ``BudgetTooSmall``."""
        ...

    def holding(self) -> Holding:
        """What the cache keeps between batches."""
        ...


@dataclass(frozen=True)
class PolicyResult:
    name: str
    hit_tokens: int
    prompt_tokens: int
    holding: Holding
    seconds: float

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.hit_tokens

    @property
    def hit_ratio(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def depth_first(batch: tuple[TraceRequest, ...], block_size: int) -> list[TraceRequest]:
    """The order this engine's planner runs a batch in; the peers get it too, so only what the
    caches keep differs."""
    plans = plan_batch([list(r.token_ids) for r in batch], [r.salt for r in batch], block_size)
    return [batch[p.index] for p in plans]


def replay(
    trace: Trace, make_policy: Callable[[], CachePolicy], kv: KVBytes, ordered: bool
) -> PolicyResult | None:
    """Runs every batch of ``trace`` through a fresh policy; None when one request does not fit."""
    policy = make_policy()
    start = time.perf_counter()
    hit = 0
    try:
        for batch in trace.batches:
            hit += policy.serve_batch(depth_first(batch, kv.block_size) if ordered else batch)
    except BudgetTooSmall:
        return None
    return PolicyResult(policy.name, hit, trace.prompt_tokens, policy.holding(), time.perf_counter() - start)


@dataclass(frozen=True)
class BudgetResult:
    """Every policy on one trace at one budget; None where one request did not fit."""

    budget: Budget
    hybatch: PolicyResult | None
    vllm: PolicyResult | None
    sglang: PolicyResult | None
    sglang_ratio: float | None  # SGLang's SWA:full token ratio that hit most
    every_layer: PolicyResult | None

    @property
    def peers(self) -> list[PolicyResult]:
        return [r for r in (self.vllm, self.sglang, self.every_layer) if r is not None]

    @property
    def policies(self) -> dict[str, PolicyResult | None]:
        return {
            "hybatch": self.hybatch,
            "vllm": self.vllm,
            "sglang": self.sglang,
            "every_layer": self.every_layer,
        }

    @property
    def best_peer(self) -> PolicyResult | None:
        return max(self.peers, key=lambda r: r.hit_tokens, default=None)

    @property
    def ours_over_best(self) -> float | None:
        """Our hit tokens ÷ the best peer's (None when either did not run or the peer hit nothing)."""
        best = self.best_peer
        if self.hybatch is None or best is None or best.hit_tokens == 0:
            return None
        return self.hybatch.hit_tokens / best.hit_tokens

    def memory_binds(self, unbounded: PolicyResult) -> bool:
        best = self.best_peer
        return best is not None and best.hit_tokens < BINDS_BELOW * unbounded.hit_tokens


def run_budget(
    trace: Trace,
    kv: KVBytes,
    budget: Budget,
    chunk_tokens: int,
    sglang_ratios: list[float],
    message_boundaries: bool = True,
) -> BudgetResult:
    from worker.bench.cache_trace_ours import OurCache

    total = budget.total_bytes
    sglang = [
        (replay(trace, lambda r=r: SglangSwaRadixCache(kv, total, chunk_tokens, r), kv, ordered=True), r)
        for r in sglang_ratios
    ]
    best_sglang, best_ratio = max(
        ((s, r) for s, r in sglang if s is not None), key=lambda sr: sr[0].hit_tokens, default=(None, None)
    )
    return BudgetResult(
        budget,
        hybatch=replay(
            trace, lambda: OurCache(kv, budget, chunk_tokens, message_boundaries), kv, ordered=False
        ),
        vllm=replay(trace, lambda: VllmHybridCache(kv, total, chunk_tokens), kv, ordered=True),
        sglang=best_sglang,
        sglang_ratio=best_ratio,
        every_layer=replay(trace, lambda: EveryLayerCache(kv, total, chunk_tokens), kv, ordered=True),
    )


def _cell(result: PolicyResult | None) -> str:
    if result is None:
        return "does not fit"
    return f"{result.hit_ratio * 100:.1f}% / {result.computed_tokens / 1000:,.0f}k"


def print_table(trace: Trace, unbounded: PolicyResult, rows: list[BudgetResult], kv: KVBytes) -> None:
    print(
        f"\n{trace.name}: {len(trace.batches)} batches, {trace.num_requests} requests, "
        f"{trace.prompt_tokens:,} prompt tokens; unbounded: {_cell(unbounded)}"
    )
    print(
        "| budget (ours: full+SWA) | hybatch | vLLM hybrid | SGLang SWA radix | every layer | ours ÷ best peer "
        "| memory binds | capacity x (ours / vLLM / SGLang) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = row.ours_over_best
        capacity = " / ".join(
            "-" if r is None else f"{r.holding.multiplier(kv):.2f}"
            for r in (row.hybatch, row.vllm, row.sglang)
        )
        sglang = _cell(row.sglang) + ("" if row.sglang is None else f" (ratio {row.sglang_ratio:g})")
        print(
            f"| {row.budget.label} | {_cell(row.hybatch)} | {_cell(row.vllm)} | {sglang} "
            f"| {_cell(row.every_layer)} | {'n/a' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'yes' if row.memory_binds(unbounded) else 'no'} | {capacity} |"
        )


def build_traces(seed: int, scale: float, names: list[str] | None) -> list[Trace]:
    traces = [w.build(seed) for w in default_workloads(scale)]
    traces.append(mix(traces))
    if names:
        unknown = set(names) - {t.name for t in traces}
        if unknown:
            raise SystemExit(f"unknown workload(s) {sorted(unknown)}; choose from {[t.name for t in traces]}")
        traces = [t for t in traces if t.name in names]
    return traces


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="hybatch bench cache-trace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--budgets",
        default=DEFAULT_BUDGETS,
        help=(
            "comma-separated budgets in GB: TOTAL (split between our pools as the worker's engine "
            f"splits HYBATCH_KV_CACHE_GB) or FULL+SWA (a split of your choosing); default {DEFAULT_BUDGETS}"
        ),
    )
    parser.add_argument(
        "--block-size", type=int, default=16, help="tokens per KV block, every policy (default 16)"
    )
    parser.add_argument(
        "--chunk-tokens", type=int, default=2048, help="prefill chunk, every policy (default 2048)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every workload (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the workloads' request counts")
    parser.add_argument("--workloads", default="", help="comma-separated subset (default: all five)")
    parser.add_argument(
        "--sglang-ratios",
        default="0.8,0.4,0.2,0.1",
        help="SGLang SWA:full token ratios to try; the best is kept",
    )
    parser.add_argument(
        "--no-message-boundaries",
        action="store_true",
        help="run chat requests as plain prompts (no windows planned where their messages end)",
    )
    args = parser.parse_args(argv)
    try:
        budgets = [Budget.parse(b, args.chunk_tokens, args.block_size) for b in args.budgets.split(",") if b]
    except ValueError as exc:
        parser.error(str(exc))
    ratios = [float(r) for r in args.sglang_ratios.split(",") if r]
    kv = pro_kv_bytes(args.block_size)
    print(
        f"KV bytes per token: full layers {kv.full_block_bytes // kv.block_size}, SWA layers "
        f"{kv.swa_block_bytes // kv.block_size}, every layer {kv.every_layer_block_bytes // kv.block_size} "
        f"(MiMo-V2.5-Pro shape, bf16); block {kv.block_size} tokens, window {kv.window}, "
        f"chunk {args.chunk_tokens} tokens; requests one at a time, in the planner's order; "
        f"message boundaries {'off' if args.no_message_boundaries else 'on'}"
    )
    result: dict = {}
    for trace in build_traces(args.seed, args.scale, [n for n in args.workloads.split(",") if n]):
        unbounded = replay(trace, lambda: EveryLayerCache(kv, UNBOUNDED_BYTES, args.chunk_tokens), kv, True)
        rows = [
            run_budget(trace, kv, b, args.chunk_tokens, ratios, not args.no_message_boundaries)
            for b in budgets
        ]
        print_table(trace, unbounded, rows, kv)
        result[trace.name] = {"unbounded": unbounded, "budgets": rows}
    return result


if __name__ == "__main__":
    main()

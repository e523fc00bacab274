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

each with the same device memory per budget (``FULL+SWA`` GB: this cache's two pools; every peer
gets their sum) on the MiMo-V2.5-Pro KV shape (``cache_trace_memory.py``). Per workload and budget
it prints hit tokens as a share of prompt tokens, ours ÷ the best peer, and the capacity multiplier
(cached tokens per byte at the end vs caching every layer). ``unbounded`` is the every-layer cache
with memory to spare: every hit the trace allows; memory binds where the best peer falls short of it.

    python -m worker.bench.cache_trace                        # the recorded run (docs/performance.md)
    python -m worker.bench.cache_trace --scale 0.25 --budgets 2+2,8+4
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.bench.cache_trace_every_layer import EveryLayerCache
from worker.bench.cache_trace_memory import Budget, BudgetTooSmall, Holding, KVBytes, pro_kv_bytes
from worker.bench.cache_trace_sglang import SglangSwaRadixCache
from worker.bench.cache_trace_vllm import VllmHybridCache
from worker.bench.cache_trace_workloads import Trace, TraceRequest, default_workloads, mix
from worker.kv_cache.planner import plan_batch

DEFAULT_BUDGETS = "2+2,4+2,8+4,16+4,32+8,64+16"
UNBOUNDED_BYTES = 10**15
BINDS_BELOW = 0.99  # memory binds where the best peer hits under 99% of what the trace allows


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
    trace: Trace, make_policy: Callable[[], object], kv: KVBytes, ordered: bool
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


def run_budget(
    trace: Trace, kv: KVBytes, budget: Budget, chunk_tokens: int, sglang_ratios: list[float]
) -> dict:
    """Every policy on one trace at one budget: {policy key: PolicyResult or None}."""
    from worker.bench.cache_trace_ours import OurCache

    total = budget.total_bytes
    results = {
        "hybatch": replay(trace, lambda: OurCache(kv, budget, chunk_tokens), kv, ordered=False),
        "vllm": replay(trace, lambda: VllmHybridCache(kv, total, chunk_tokens), kv, ordered=True),
        "every_layer": replay(trace, lambda: EveryLayerCache(kv, total, chunk_tokens), kv, ordered=True),
    }
    sglang = [
        replay(trace, lambda r=r: SglangSwaRadixCache(kv, total, chunk_tokens, r), kv, ordered=True)
        for r in sglang_ratios
    ]
    fitting = [s for s in sglang if s is not None]
    results["sglang"] = max(fitting, key=lambda s: s.hit_tokens) if fitting else None
    return results


def best_peer(results: dict) -> PolicyResult | None:
    peers = [results[k] for k in ("vllm", "sglang", "every_layer") if results[k] is not None]
    return max(peers, key=lambda r: r.hit_tokens) if peers else None


def ours_over_best(results: dict) -> float | None:
    ours, best = results["hybatch"], best_peer(results)
    if ours is None or best is None or best.hit_tokens == 0:
        return None
    return ours.hit_tokens / best.hit_tokens


def _cell(result: PolicyResult | None) -> str:
    return "does not fit" if result is None else f"{result.hit_ratio * 100:5.1f}%"


def print_table(trace: Trace, unbounded: PolicyResult, rows: list[tuple[Budget, dict]], kv: KVBytes) -> None:
    print(
        f"\n{trace.name}: {len(trace.batches)} batches, {trace.num_requests} requests, "
        f"{trace.prompt_tokens} prompt tokens; unbounded hits {unbounded.hit_ratio * 100:.1f}%"
    )
    print(
        "| budget (full+SWA) | hybatch | vLLM hybrid | SGLang SWA | every layer | ours ÷ best peer "
        "| memory binds | capacity x (ours / vLLM / SGLang) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for budget, results in rows:
        ratio = ours_over_best(results)
        best = best_peer(results)
        binds = best is not None and best.hit_tokens < BINDS_BELOW * unbounded.hit_tokens
        capacity = " / ".join(
            "-" if results[k] is None else f"{results[k].holding.multiplier(kv):.2f}"
            for k in ("hybatch", "vllm", "sglang")
        )
        sglang = results["sglang"]
        sglang_cell = _cell(sglang) + ("" if sglang is None else f" (r {sglang.name.split()[-1][:-1]})")
        print(
            f"| {budget.label} | {_cell(results['hybatch'])} | {_cell(results['vllm'])} | {sglang_cell} "
            f"| {_cell(results['every_layer'])} | {'n/a' if ratio is None else f'{ratio:.2f}x'} "
            f"| {'yes' if binds else 'no'} | {capacity} |"
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
        help=f"comma-separated FULL+SWA GB budgets (default {DEFAULT_BUDGETS})",
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
        "--sglang-ratios", default="0.8,0.4,0.2", help="SGLang SWA:full token ratios to try; the best is kept"
    )
    args = parser.parse_args(argv)
    budgets = [Budget.parse(b) for b in args.budgets.split(",") if b]
    ratios = [float(r) for r in args.sglang_ratios.split(",") if r]
    kv = pro_kv_bytes(args.block_size)
    print(
        f"KV bytes per token: full layers {kv.full_block_bytes // kv.block_size}, SWA layers "
        f"{kv.swa_block_bytes // kv.block_size}, every layer {kv.every_layer_block_bytes // kv.block_size} "
        f"(MiMo-V2.5-Pro shape, bf16); block {kv.block_size} tokens, window {kv.window}, "
        f"chunk {args.chunk_tokens} tokens; requests one at a time, in the planner's order"
    )
    result: dict = {}
    for trace in build_traces(args.seed, args.scale, [n for n in args.workloads.split(",") if n]):
        unbounded = replay(trace, lambda: EveryLayerCache(kv, UNBOUNDED_BYTES, args.chunk_tokens), kv, True)
        rows = [(b, run_budget(trace, kv, b, args.chunk_tokens, ratios)) for b in budgets]
        print_table(trace, unbounded, rows, kv)
        result[trace.name] = {"unbounded": unbounded} | {b.label: r for b, r in rows}
    return result


if __name__ == "__main__":
    main()

"""``hybatch bench cache``: what the sliding-window-aware prefix cache buys, measured against peers.

1. Capacity multiplier vs caching every layer: analytic for the MiMo-V2.5-Pro shape and measured on a
   checkpoint (device bytes the cache holds per cached token after caching one prefix).
2. A shared-prefix batch: prompt tokens computed / the theoretical minimum, wall time with vs without.
3. A batch with nothing shared: wall time with the cache vs without (the cache's overhead).
4. Time to serve a hit from the device, host and disk tiers vs recomputing the prefix.
5. Eviction: reclaiming blocks one per call from a large tree vs one full scan of it, and dropping
   retained windows one per call vs one scan and sort of them (``worker/bench/eviction.py``, no model).

    python -m worker.bench.cache                      # default model, CPU, sizes that fit a laptop
    python -m worker.bench.cache --system-len 2048 --num-requests 200 --device cuda
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.bench.eviction import eviction_times, window_drop_times
from worker.bench.workloads import DEFAULT_CHECKPOINT, special_token_ids


@dataclass(frozen=True)
class Shape:
    name: str
    num_full_layers: int
    num_swa_layers: int
    kv_heads_full: int
    kv_heads_swa: int
    head_dim_qk: int
    head_dim_v: int
    window: int
    bytes_per_element: int = 2  # bf16

    def bytes_per_token(self, sliding: bool) -> int:
        heads = self.kv_heads_swa if sliding else self.kv_heads_full
        return heads * (self.head_dim_qk + self.head_dim_v) * self.bytes_per_element


# MiMo-V2.5-Pro: 70 layers (10 full + 60 SWA), 8 KV heads (SWA layers double them), q/k 192, v 128, W 128.
PRO = Shape("MiMo-V2.5-Pro", 10, 60, 8, 16, 192, 128, 128)


def retained_window_tokens(window: int, block_size: int) -> int:
    """Tokens of SWA KV one retained window keeps: the W - 1 keys before the resume point, in blocks."""
    return -(-(window - 1) // block_size) * block_size


def analytic_multiplier(
    shape: Shape, prefix_len: int, block_size: int = 16, windows_per_prefix: int = 1
) -> float:
    """(nF·bF + nS·bS) / (nF·bF + nS·bS·k·w/L): every layer cached vs full layers + k windows of w."""
    full = shape.num_full_layers * shape.bytes_per_token(False)
    swa = shape.num_swa_layers * shape.bytes_per_token(True)
    w = retained_window_tokens(shape.window, block_size)
    return (full + swa) / (full + swa * windows_per_prefix * w / prefix_len)


def _llm(checkpoint, args, **kw):
    from worker.engine import LLM

    kw = {
        "device": args.device,
        "dtype": args.dtype,
        "kv_cache_gb": args.kv_cache_gb,
        "max_num_seqs": args.max_num_seqs,
    } | kw
    return LLM(checkpoint, **kw)


def measured_multiplier(checkpoint: Path, prefix_len: int, args) -> tuple[float, int, float]:
    """Caches one prefix of ``prefix_len`` tokens; returns (multiplier, device bytes held, multiplier
    with spare windows). The first two leave out the SWA blocks only spare windows hold: with free
    SWA memory the cache keeps a window at every block boundary (as much SWA KV as caching every
    layer would), and gives them up first once memory binds, which is where the multiplier counts."""
    from worker.engine import SamplingParams

    llm = _llm(checkpoint, args, enable_prefix_caching=True)
    vocab = llm.config.vocab_size
    avoid = special_token_ids(checkpoint)
    rng = random.Random(prefix_len)
    prompt = [rng.choice([t for t in range(vocab) if t not in avoid]) for _ in range(prefix_len)]
    llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0, max_tokens=1))
    cache = llm.engine.cache
    transfer = llm.engine.runner.transfer
    cached_tokens = cache.tree.num_nodes * llm.engine.blocks.block_size
    # One block of KV in every layer, full and sliding: what caching every layer would keep per block.
    per_token_every_layer = transfer.payload_bytes(1) / llm.engine.blocks.block_size
    held = cache.device_bytes(include_spare=False)
    with_spare = per_token_every_layer * cached_tokens / cache.device_bytes()
    return per_token_every_layer * cached_tokens / held, held, with_spare


def _prompts_shared(vocab, avoid, num_requests, num_systems, system_len, question_len, seed=0):
    rng = random.Random(seed)
    tokens = [t for t in range(vocab) if t not in avoid]
    systems = [[rng.choice(tokens) for _ in range(system_len)] for _ in range(num_systems)]
    prompts = [
        systems[i % num_systems] + [rng.choice(tokens) for _ in range(question_len)]
        for i in range(num_requests)
    ]
    rng.shuffle(prompts)
    return prompts, num_systems * system_len + num_requests * question_len


def _timed_batch(llm, prompts, max_tokens=1):
    from worker.engine import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    start_computed = llm.stats().num_prompt_tokens_computed
    if llm.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    if llm.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, llm.stats().num_prompt_tokens_computed - start_computed, outs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="hybatch bench cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help="checkpoint directory (default: the shipped model)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="auto", help="auto: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--kv-cache-gb", type=float, default=1.0, help="device KV cache of every engine, GB")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="sequences an engine runs at once")
    parser.add_argument(
        "--capacity-lens", default="2048", help="comma-separated prefix lengths to measure (1)"
    )
    parser.add_argument(
        "--num-requests", type=int, default=200, help="requests in the shared-prefix batch (2)"
    )
    parser.add_argument("--num-systems", type=int, default=4, help="distinct system prompts they share (2)")
    parser.add_argument("--system-len", type=int, default=2048, help="tokens per system prompt (2)")
    parser.add_argument(
        "--question-len", type=int, default=64, help="tokens of each request's own question (2)"
    )
    parser.add_argument(
        "--unique-requests", type=int, default=32, help="prompts in the nothing-shared batch (3)"
    )
    parser.add_argument("--unique-len", type=int, default=256, help="tokens per nothing-shared prompt (3)")
    parser.add_argument(
        "--tier-prefix-len", type=int, default=2048, help="prefix served from each tier, tokens (4)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing, best kept (3, 4, 5)")
    parser.add_argument("--evict-leaves", type=int, default=20000, help="leaves in the eviction tree (5)")
    parser.add_argument("--drop-windows", type=int, default=10000, help="retained windows to drop (5)")
    args = parser.parse_args(argv)
    result: dict = {}

    print("1. capacity multiplier vs caching every layer (one retained window per prefix, block 16)")
    for length in (2048, 8192, 32768):
        m = analytic_multiplier(PRO, length)
        result[f"pro_analytic_{length}"] = m
        print(f"   {PRO.name:<16} analytic  L={length:>6}: {m:5.2f}x")
    from worker.model.config import ModelConfig

    config = ModelConfig.from_dir(args.model)
    for length in [int(x) for x in args.capacity_lens.split(",") if x]:
        if length >= config.max_position_embeddings:
            print(f"   {args.model.name:<16} measured  L={length:>6}: skipped (beyond the model's context)")
            continue
        m, held, with_spare = measured_multiplier(args.model, length, args)
        result[f"measured_{length}"] = m
        result[f"measured_with_spare_{length}"] = with_spare
        print(
            f"   {args.model.name:<16} measured  L={length:>6}: {m:5.2f}x  ({held / 2**20:.1f} MiB held; "
            f"{with_spare:.2f}x with the spare windows that fill free SWA memory)"
        )

    vocab, avoid = config.vocab_size, special_token_ids(args.model)
    print(
        f"2. shared-prefix batch: {args.num_requests} requests over {args.num_systems} system prompts of "
        f"{args.system_len} tokens + unique {args.question_len}-token questions, shuffled"
    )
    prompts, minimum = _prompts_shared(
        vocab, avoid, args.num_requests, args.num_systems, args.system_len, args.question_len
    )
    cached = _llm(args.model, args, enable_prefix_caching=True)
    t_cache, computed, outs = _timed_batch(cached, prompts)
    plain = _llm(args.model, args)
    t_plain, computed_plain, plain_outs = _timed_batch(plain, prompts)
    same = sum(
        a.outputs[0].token_ids == b.outputs[0].token_ids for a, b in zip(outs, plain_outs, strict=True)
    )
    result |= {"computed_over_minimum": computed / minimum, "shared_speedup": t_plain / t_cache}
    print(f"   computed {computed} prompt tokens, theoretical minimum {minimum}: {computed / minimum:.3f}x")
    print(
        f"   wall time with cache {t_cache:.2f} s, without {t_plain:.2f} s ({computed_plain} tokens): "
        f"{t_plain / t_cache:.1f}x faster; identical outputs {same}/{len(prompts)}"
    )

    print(f"3. nothing shared: {args.unique_requests} unique prompts of {args.unique_len} tokens")
    unique, _ = _prompts_shared(
        vocab, avoid, args.unique_requests, args.unique_requests, args.unique_len, 0, seed=1
    )
    times = {"cache": [], "plain": []}
    for _ in range(args.repeats):  # interleaved, fresh engines, best of N: the machine's noise hits both
        times["cache"].append(_timed_batch(_llm(args.model, args, enable_prefix_caching=True), unique, 16)[0])
        times["plain"].append(_timed_batch(_llm(args.model, args), unique, 16)[0])
    overhead = min(times["cache"]) / min(times["plain"]) - 1
    result["unshared_overhead"] = overhead
    print(
        f"   best of {args.repeats}: with cache {min(times['cache']):.2f} s, without {min(times['plain']):.2f} s: "
        f"overhead {overhead * 100:+.1f}%"
    )

    print(f"4. serving a {args.tier_prefix_len}-token prefix from each tier vs recomputing it")
    result |= _tier_times(args, vocab, avoid)

    print(f"5. eviction: a tree of {args.evict_leaves} leaves, half of them reclaimed one block per call")
    result |= eviction_times(args.evict_leaves, args.repeats)
    print(f"   and a tree of {args.drop_windows} retained windows, half of them dropped one per call")
    result |= window_drop_times(args.drop_windows, args.repeats)
    return result


def _tier_times(args, vocab, avoid) -> dict:
    rng = random.Random(7)
    tokens = [t for t in range(vocab) if t not in avoid]
    prefix = [rng.choice(tokens) for _ in range(args.tier_prefix_len)]
    probe = [prefix + [rng.choice(tokens) for _ in range(16)] for _ in range(args.repeats)]
    with tempfile.TemporaryDirectory() as disk_dir:
        llm = _llm(
            args.model,
            args,
            enable_prefix_caching=True,
            host_cache_gb=1.0,
            disk_cache_dir=disk_dir,
            disk_cache_gb=1.0,
        )
        _timed_batch(llm, [prefix + [tokens[0]]])
        cache = llm.engine.cache
        times: dict[str, float] = {}
        for tier in ("device", "host", "disk"):
            best = float("inf")
            for p in probe:
                if tier == "host":
                    cache.demote_all()
                elif tier == "disk":
                    cache.demote_all()
                    cache.tiers.spill_host_to_disk(list(cache.tree.nodes()))
                best = min(best, _timed_batch(llm, [p])[0])
            times[tier] = best
        llm.close()
    plain = _llm(args.model, args)
    times["recompute"] = min(_timed_batch(plain, [p])[0] for p in probe)
    for tier in ("device", "host", "disk"):
        print(
            f"   {tier:<9} hit {times[tier] * 1000:8.1f} ms  ({times[tier] / times['device']:.2f}x a device hit, "
            f"{times['recompute'] / times[tier]:.1f}x faster than recompute)"
        )
    print(f"   recompute     {times['recompute'] * 1000:8.1f} ms")
    return {f"tier_{k}_s": v for k, v in times.items()}


if __name__ == "__main__":
    main()

r"""``hybatch bench prefill``: the seed's prefill claim, measured on this engine.

Xiaomi says the 70-layer MiMo-V2.5-Pro (10 full + 60 sliding-window layers, window 128) prefills for
about the attention compute of a 10-layer full-attention model. Three random models of one reduced
width, built in the same run and prefilled with the same prompts:

- ``hybrid-70``: the V2.5-Pro pattern, full attention at layers 0, 7, ..., 63, SWA elsewhere;
- ``full-70``: the same 70 layers, all full attention (what the pattern saves);
- ``full-10``: 10 full-attention layers (the claim's peer).

For each prompt length: time per prompt token (one prefill, ``max_tokens=1``) and the analytic FLOPs
per prompt token, split into linear (projections and MLP: the same per layer in every variant) and
attention (QK and PV over the keys each query sees: (L+1)/2 on average for a full layer, at most
the window for an SWA layer); then the ratios. MLPs are dense at this width (a few-expert MoE here
would time the expert loop, not the layer pattern).

    python -m worker.bench.prefill                                  # CPU, 2K and 4K tokens
    python -m worker.bench.prefill --lengths 2048,8192,32768 --device cuda --backend triton
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from worker.model.config import FULL, SLIDING, ModelConfig
from worker.model.hub_layout import write_random_checkpoint

GIB = 2**30
FULL_EVERY = 7  # V2.5-Pro: full attention at layers 0, 7, ..., 63 (10 of 70)


@dataclass(frozen=True)
class Variant:
    name: str
    layer_types: tuple[str, ...]


VARIANTS = (
    Variant("hybrid-70", tuple(FULL if i % FULL_EVERY == 0 else SLIDING for i in range(70))),
    Variant("full-70", (FULL,) * 70),
    Variant("full-10", (FULL,) * 10),
)


def raw_config(variant: Variant, args) -> dict:
    n = len(variant.layer_types)
    return {
        "model_type": "mimo_v2_flash",
        "vocab_size": 1024,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": n,
        "layer_types": list(variant.layer_types),
        "mlp_layer_types": ["dense"] * n,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "v_head_dim": args.v_head_dim,
        "sliding_window_size": args.window,  # as published: keys before the query
        "max_position_embeddings": 2 * max(args.lengths) + 64,
        "bos_token_id": None,
        "eos_token_id": None,
    }


@dataclass(frozen=True)
class Flops:
    linear: float  # per prompt token
    attention: float  # per prompt token

    @property
    def total(self) -> float:
        return self.linear + self.attention


def flops_per_token(config: ModelConfig, prompt_len: int) -> Flops:
    """Analytic FLOPs per prompt token of one prefill (2 per multiply-add; lm_head on the last token only)."""
    h, heads = config.hidden_size, config.num_attention_heads
    linear = 0.0
    attention = 0.0
    for i in range(config.num_layers):
        kv_rows = config.num_kv_heads(i) * (config.head_dim + config.v_head_dim)
        linear += 2 * h * (heads * config.head_dim + kv_rows)  # q, k, v
        linear += 2 * heads * config.v_head_dim * h  # o_proj
        linear += 2 * 3 * h * config.intermediate_size  # gate, up, down
        if config.is_sliding(i):
            w = min(config.sliding_window, prompt_len)
            # position p sees min(p + 1, W) keys
            keys = (w * (w + 1) / 2 + (prompt_len - w) * w) / prompt_len
        else:
            keys = (prompt_len + 1) / 2
        attention += 2 * heads * keys * (config.head_dim + config.v_head_dim)
    return Flops(linear, attention)


def time_prefill(path: Path, config: ModelConfig, prompt_len: int, args) -> float:
    """Median seconds of one prefill of ``prompt_len`` tokens (after a warm-up prefill)."""
    from worker.engine import LLM, SamplingParams

    def kv_bytes_per_token(layers) -> int:  # fp32 K + V over the given layers
        return sum(config.num_kv_heads(i) * (config.head_dim + config.v_head_dim) * 4 for i in layers)

    # The full pool holds the prompt; the SWA pool a window plus a chunk (and gets at most half).
    full_need = (prompt_len + args.chunk) * kv_bytes_per_token(config.full_layers)
    swa_need = (config.sliding_window + 2 * args.chunk) * kv_bytes_per_token(config.swa_layers)
    kv_gb = (2 * (full_need + swa_need) + 16 * 2**20) / GIB
    llm = LLM(
        path,
        device=args.device,
        dtype=args.dtype,
        kv_cache_gb=kv_gb,
        max_num_seqs=1,
        max_num_batched_tokens=args.chunk,
        attention_backend=args.backend,
    )
    generator = torch.Generator().manual_seed(prompt_len)
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    llm.generate([{"prompt_token_ids": list(range(1, 33))}], params)  # warm up
    times = []
    for _ in range(args.repeats):
        prompt = torch.randint(1, 1024, (prompt_len,), generator=generator).tolist()
        if llm.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate([{"prompt_token_ids": prompt}], params)
        if llm.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Runs the bench; returns per prompt length the ratios it prints."""
    parser = argparse.ArgumentParser(
        prog="hybatch bench prefill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lengths", default="2048,4096", help="prompt lengths, comma-separated")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size (reduced width)")
    parser.add_argument("--intermediate", type=int, default=256, help="dense MLP width")
    parser.add_argument("--heads", type=int, default=8, help="query heads")
    parser.add_argument("--kv-heads", type=int, default=1, help="full-layer KV heads (SWA layers: twice)")
    parser.add_argument("--head-dim", type=int, default=48, help="q/k head dim")
    parser.add_argument("--v-head-dim", type=int, default=32, help="v head dim")
    parser.add_argument("--window", type=int, default=128, help="sliding_window_size (keys before the query)")
    parser.add_argument("--chunk", type=int, default=2048, help="chunked-prefill tokens per step")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--backend", default="torch", help="attention backend: torch or triton")
    parser.add_argument("--repeats", type=int, default=1, help="timed prefills per length (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--variants",
        default=",".join(v.name for v in VARIANTS),
        help="which models to time (hybrid-70 always)",
    )
    parser.add_argument(
        "--flops-only", action="store_true", help="print the analytic FLOPs table, time nothing"
    )
    args = parser.parse_args(argv)
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"prefill on {args.device} ({args.dtype}, {args.backend} attention, {torch.get_num_threads()} threads): "
        f"hidden {args.hidden}, {args.heads} heads, KV {args.kv_heads}/{2 * args.kv_heads}, "
        f"q/k {args.head_dim}, v {args.v_head_dim}, window {args.window}, chunk {args.chunk}"
    )
    chosen = {"hybrid-70", *args.variants.split(",")}
    variants = [v for v in VARIANTS if v.name in chosen]
    results: dict[tuple[str, int], tuple[Flops, float | None]] = {}
    if args.flops_only:
        for variant in variants:
            config = ModelConfig.from_dict(raw_config(variant, args))
            results |= {(variant.name, n): (flops_per_token(config, n), None) for n in args.lengths}
        return print_table(results, args.lengths, variants)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            raw = raw_config(variant, args)
            path = write_random_checkpoint(raw, Path(tmp) / variant.name, dtype=torch.float32, std=0.02)
            config = ModelConfig.from_dict(raw)
            for length in args.lengths:
                seconds = time_prefill(path, config, length, args)
                results[variant.name, length] = (flops_per_token(config, length), seconds)
                print(f"  {variant.name:10s} {length:6d} tokens: {seconds:8.2f} s", flush=True)
    return print_table(results, args.lengths, variants)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def print_table(results, lengths, variants) -> dict[int, dict[str, float | None]]:
    print(
        "\n| prompt | model | linear MFLOP/token | attention MFLOP/token | total MFLOP/token "
        "| ms/token | time vs hybrid-70 |"
    )
    print("|---|---|---|---|---|---|---|")

    def fmt(value: float | None, spec: str, unit: str = "") -> str:
        return "not timed" if value is None else format(value, spec) + unit

    for length in lengths:
        hybrid_s = results["hybrid-70", length][1]
        for variant in variants:
            flops, seconds = results[variant.name, length]
            per_token = None if seconds is None else 1e3 * seconds / length
            print(
                f"| {length:,} | {variant.name} | {flops.linear / 1e6:,.1f} | {flops.attention / 1e6:,.1f} "
                f"| {flops.total / 1e6:,.1f} | {fmt(per_token, '.3f')} | {fmt(_ratio(seconds, hybrid_s), '.2f', 'x')} |"
            )
    print()
    ratios = {}
    names = {v.name for v in variants}
    for length in lengths:
        h, hs = results["hybrid-70", length]
        ratios[length] = row = {}
        line = [f"{length:>6,} tokens: hybrid-70"]
        if "full-70" in names:
            f70, f70s = results["full-70", length]
            row["speedup_vs_full_70"] = _ratio(f70s, hs)
            row["flops_full_70_vs_hybrid"] = f70.total / h.total
            line.append(
                f"is {fmt(row['speedup_vs_full_70'], '.2f', 'x')} faster than full-70 (FLOPs {f70.total / h.total:.2f}x)"
            )
        if "full-10" in names:
            f10, f10s = results["full-10", length]
            row["time_vs_full_10"] = _ratio(hs, f10s)
            row["flops_vs_full_10"] = h.total / f10.total
            row["attention_flops_vs_full_10"] = h.attention / f10.attention
            line.append(
                f"takes {fmt(row['time_vs_full_10'], '.2f', 'x')} the time of full-10 (FLOPs {h.total / f10.total:.2f}x, "
                f"attention FLOPs {h.attention / f10.attention:.2f}x)"
            )
        print(" ".join(line[:2]) + ("; " + line[2] if len(line) > 2 else ""))
    return ratios


if __name__ == "__main__":
    main()

"""GPU benchmark of the attention kernels: ``hybatch bench kernels``, or ``python -m kernels.bench``.

Needs only torch and triton. First checks correctness in bf16 against ``kernels.reference`` on the GPU,
then times, each against a peer measured in the same run:

- SWA prefill (W=128, B=1, H=32, D=128, L=8192) vs FlexAttention with a sliding-window block mask;
  goal: >= 2x faster.
- Full causal prefill (same shape) TFLOP/s vs ``scaled_dot_product_attention``; goal >= 0.8x.
- Decode (32 sequences x 2K context, 32 query / 4 KV heads, head dims 192/128, split-KV) effective
  bandwidth vs a measured device-to-device copy; goal >= 70%.

``--dry-run`` runs tiny shapes on the CPU through the Triton interpreter (fp32, timings meaningless):
it only proves the script runs end to end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BenchShapes:
    prefill_len: int
    prefill_heads: int
    prefill_head_dim: int
    window: int
    decode_batch: int
    decode_context: int
    decode_q_heads: int
    decode_kv_heads: int
    decode_head_dim_qk: int
    decode_head_dim_v: int
    block_size: int


GPU_SHAPES = BenchShapes(8192, 32, 128, 128, 32, 2048, 32, 4, 192, 128, 16)
DRY_RUN_SHAPES = BenchShapes(32, 1, 16, 8, 2, 24, 4, 2, 24, 20, 4)


@dataclass(frozen=True)
class Row:
    name: str
    ours_ms: float
    peer_ms: float | None
    metric: str  # what ours_value / peer_value measure
    ours_value: float
    peer_value: float | None
    goal: float  # minimum ratio ours_value / peer_value

    @property
    def ratio(self) -> float | None:
        return None if not self.peer_value else self.ours_value / self.peer_value


def _time_ms(fn: Callable[[], object], on_gpu: bool, *, cuda_graph: bool = False) -> float:
    """Median GPU time of ``fn``; one untimed-warmup-free call on the CPU (dry run only).

    ``cuda_graph`` replays a captured graph so short kernels are not measured as launch overhead (the
    engine captures its decode steps the same way). The first call, outside the graph, autotunes.
    """
    if not on_gpu:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    import triton.testing

    fn()
    torch.cuda.synchronize()
    if cuda_graph:
        try:
            return float(triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
        except Exception as error:  # report and fall back to stream timing rather than give up
            print(f"  CUDA graph capture failed ({type(error).__name__}: {error}); timing without it")
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _paged(dense: torch.Tensor, block_size: int) -> torch.Tensor:
    """[batch, seq_len, heads, dim] (seq_len a multiple of block_size) -> [blocks, block_size, heads, dim]."""
    batch, seq_len, heads, dim = dense.shape
    return dense.reshape(batch * seq_len // block_size, block_size, heads, dim)


def _contiguous_tables(batch: int, seq_len: int, block_size: int, device) -> dict[str, torch.Tensor]:
    blocks_per_seq = seq_len // block_size
    i32 = dict(dtype=torch.int32, device=device)
    return {
        "block_table": torch.arange(batch * blocks_per_seq, **i32).reshape(batch, blocks_per_seq),
        "block_table_start": torch.zeros(batch, **i32),
        "seq_lens": torch.full((batch,), seq_len, **i32),
    }


# name, (seq_len, q_len) per sequence, q heads, kv heads, qk dim, v dim, window, sinks, forced splits
GPU_CASES = [
    ("swa-prefill-sinks", [(300, 300), (517, 77), (140, 1)], 16, 8, 192, 128, 128, True, None),
    ("full-prefill", [(300, 300), (517, 77), (140, 1)], 16, 2, 192, 128, 0, False, None),
    ("full-decode-split", [(700, 1), (33, 1), (1100, 1)], 32, 4, 192, 128, 0, False, 4),
    ("swa-decode-sinks", [(700, 1), (33, 1), (1100, 1)], 16, 8, 192, 128, 128, True, None),
]
DRY_RUN_CASES = [
    ("swa-prefill-sinks", [(20, 20), (37, 5)], 4, 2, 24, 20, 8, True, None),
    ("full-decode-split", [(40, 1), (9, 1)], 4, 2, 24, 20, 0, False, 2),
]


def check_correctness(cases, dtype: torch.dtype, device, *, tolerance: float) -> list[str]:
    """Ragged batches on shuffled blocks vs the reference; returns the failures (empty: all good)."""
    from kernels import paged_attention
    from kernels.attention_launch import launch_paged_attention
    from kernels.reference import paged_attention_reference

    failures = []
    rng = random.Random(0)
    torch.manual_seed(0)
    block_size = 16
    for name, specs, q_heads, kv_heads, dim_qk, dim_v, window, with_sinks, splits in cases:
        num_blocks = sum(math.ceil(s / block_size) for s, _ in specs) + 1
        k_cache = torch.randn(num_blocks, block_size, kv_heads, dim_qk, device=device).to(dtype)
        v_cache = torch.randn(num_blocks, block_size, kv_heads, dim_v, device=device).to(dtype)
        free = list(range(num_blocks))
        rng.shuffle(free)
        max_blocks = max(math.ceil(s / block_size) for s, _ in specs)
        table = torch.zeros(len(specs), max_blocks, dtype=torch.int32)
        for seq, (seq_len, _) in enumerate(specs):
            for column in range(math.ceil(seq_len / block_size)):
                table[seq, column] = free.pop()
        q_lens = [q for _, q in specs]
        q = torch.randn(sum(q_lens), q_heads, dim_qk, device=device).to(dtype)
        args = (
            q,
            k_cache,
            v_cache,
            table.to(device),
            torch.zeros(len(specs), dtype=torch.int32, device=device),
            torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=device),
            torch.tensor([s for s, _ in specs], dtype=torch.int32, device=device),
        )
        kwargs = dict(
            window=window,
            scale=dim_qk**-0.5,
            sinks=torch.randn(q_heads, device=device) if with_sinks else None,
        )
        if splits is None:
            ours = paged_attention(*args, **kwargs)
        else:
            ours, _ = launch_paged_attention(*args, **kwargs, num_splits=splits)
        expected = paged_attention_reference(*args, **kwargs).float()
        error = (ours.float() - expected).abs().max().item()
        status = "ok" if error <= tolerance and torch.isfinite(ours).all() else "FAILED"
        print(f"  correctness {name:<20} max abs error {error:.2e} (tolerance {tolerance:.0e}) {status}")
        if status != "ok":
            failures.append(name)
    return failures


def bench_prefill(shapes: BenchShapes, dtype, device, on_gpu: bool) -> list[Row]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from kernels import paged_attention

    length, heads, dim, window = (
        shapes.prefill_len,
        shapes.prefill_heads,
        shapes.prefill_head_dim,
        shapes.window,
    )
    q, k, v = (torch.randn(1, length, heads, dim, device=device, dtype=dtype) for _ in range(3))
    tables = _contiguous_tables(1, length, shapes.block_size, device)
    query_start_loc = torch.tensor([0, length], dtype=torch.int32, device=device)
    k_cache, v_cache = _paged(k, shapes.block_size), _paged(v, shapes.block_size)
    out = torch.empty_like(q[0])
    scale = dim**-0.5

    def ours(w: int) -> Callable[[], object]:
        return lambda: paged_attention(
            q[0],
            k_cache,
            v_cache,
            tables["block_table"],
            tables["block_table_start"],
            query_start_loc,
            tables["seq_lens"],
            window=w,
            scale=scale,
            out=out,
        )

    q_bhld, k_bhld, v_bhld = (t.transpose(1, 2).contiguous() for t in (q, k, v))

    def sliding(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    block_mask = create_block_mask(sliding, B=None, H=None, Q_LEN=length, KV_LEN=length, device=device)
    # Eager flex (dry run) warns that it is unfused; on the GPU it is compiled, as its users run it.
    flex = torch.compile(flex_attention) if on_gpu else flex_attention
    # FLOPs of QK^T and PV over the visible (query, key) pairs only.
    swa_flops = 2 * 2 * heads * dim * sum(min(p + 1, window) for p in range(length))
    causal_flops = 2 * 2 * heads * dim * length * (length + 1) / 2

    swa_ms = _time_ms(ours(window), on_gpu)
    try:
        flex_ms = _time_ms(lambda: flex(q_bhld, k_bhld, v_bhld, block_mask=block_mask, scale=scale), on_gpu)
    except Exception as error:  # the peer may be unavailable on this build; report, do not crash
        print(f"  FlexAttention unavailable: {type(error).__name__}: {error}")
        flex_ms = None
    full_ms = _time_ms(ours(0), on_gpu)
    sdpa_ms = _time_ms(
        lambda: torch.nn.functional.scaled_dot_product_attention(
            q_bhld, k_bhld, v_bhld, is_causal=True, scale=scale
        ),
        on_gpu,
    )
    return [
        Row(
            f"SWA prefill W={window} vs flex",
            swa_ms,
            flex_ms,
            "TFLOP/s",
            swa_flops / swa_ms / 1e9,
            swa_flops / flex_ms / 1e9 if flex_ms else None,
            2.0,
        ),
        Row(
            f"full prefill L={length} vs sdpa",
            full_ms,
            sdpa_ms,
            "TFLOP/s",
            causal_flops / full_ms / 1e9,
            causal_flops / sdpa_ms / 1e9,
            0.8,
        ),
    ]


def bench_decode(shapes: BenchShapes, dtype, device, on_gpu: bool) -> list[Row]:
    from kernels import paged_attention

    batch, context = shapes.decode_batch, shapes.decode_context
    kv_heads, dim_qk, dim_v = shapes.decode_kv_heads, shapes.decode_head_dim_qk, shapes.decode_head_dim_v
    k_cache = torch.randn(
        batch * context // shapes.block_size, shapes.block_size, kv_heads, dim_qk, device=device, dtype=dtype
    )
    v_cache = torch.randn(*k_cache.shape[:3], dim_v, device=device, dtype=dtype)
    q = torch.randn(batch, shapes.decode_q_heads, dim_qk, device=device, dtype=dtype)
    tables = _contiguous_tables(batch, context, shapes.block_size, device)
    query_start_loc = torch.arange(batch + 1, dtype=torch.int32, device=device)
    out = torch.empty(batch, shapes.decode_q_heads, dim_v, device=device, dtype=dtype)
    decode_ms = _time_ms(
        lambda: paged_attention(
            q,
            k_cache,
            v_cache,
            tables["block_table"],
            tables["block_table_start"],
            query_start_loc,
            tables["seq_lens"],
            window=0,
            scale=dim_qk**-0.5,
            out=out,
        ),
        on_gpu,
        cuda_graph=True,
    )
    kv_bytes = (k_cache.numel() + v_cache.numel()) * k_cache.element_size()

    copy_bytes = max(kv_bytes, 1 << 28) if on_gpu else kv_bytes
    source = torch.empty(copy_bytes // 2, dtype=torch.float16, device=device)
    target = torch.empty_like(source)
    copy_ms = _time_ms(lambda: target.copy_(source), on_gpu, cuda_graph=True)
    copy_gbps = 2 * copy_bytes / copy_ms / 1e6  # read + write
    decode_gbps = kv_bytes / decode_ms / 1e6
    return [Row(f"decode {batch}x{context} vs copy", decode_ms, copy_ms, "GB/s", decode_gbps, copy_gbps, 0.7)]


def print_table(rows: list[Row], device_name: str, *, judge: bool) -> None:
    print(f"\nkernels benchmark on {device_name}")
    header = f"{'case':<34} {'ours ms':>9} {'peer ms':>9} {'metric':>13} {'ours':>10} {'peer':>10} {'ratio':>7} goal"
    print(header)
    print("-" * len(header))
    for row in rows:
        peer_ms = f"{row.peer_ms:9.3f}" if row.peer_ms is not None else f"{'-':>9}"
        peer = f"{row.peer_value:10.2f}" if row.peer_value is not None else f"{'-':>10}"
        ratio = f"{row.ratio:7.2f}" if row.ratio is not None else f"{'-':>7}"
        verdict = ("met" if row.ratio and row.ratio >= row.goal else "MISSED") if judge else "(not judged)"
        goal = f">={row.goal:g}x {verdict}"
        print(
            f"{row.name:<34} {row.ours_ms:9.3f} {peer_ms} {row.metric:>13} {row.ours_value:10.2f} {peer} "
            f"{ratio} {goal}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybatch bench kernels", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny shapes on the CPU through the Triton interpreter (no timings worth reading)",
    )
    parser.add_argument("--skip-timing", action="store_true", help="only check correctness")
    args = parser.parse_args(argv)

    if args.dry_run:
        if "kernels.attention_launch" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("--dry-run needs TRITON_INTERPRET=1 before the kernels are first used")
            return 2
        os.environ["TRITON_INTERPRET"] = "1"
        device, dtype, shapes, on_gpu = torch.device("cpu"), torch.float32, DRY_RUN_SHAPES, False
        device_name = "CPU (Triton interpreter, dry run)"
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run on a GPU, or pass --dry-run for a CPU smoke run")
            return 2
        device, dtype, shapes, on_gpu = torch.device("cuda"), torch.bfloat16, GPU_SHAPES, True
        device_name = torch.cuda.get_device_name(device)
    import triton

    device_name += f" (torch {torch.__version__}, triton {triton.__version__})"

    print(f"correctness ({dtype}, vs kernels.reference)")
    cases = DRY_RUN_CASES if args.dry_run else GPU_CASES
    failures = check_correctness(cases, dtype, device, tolerance=3e-2 if dtype == torch.bfloat16 else 1e-4)
    if failures:
        print(f"correctness FAILED: {failures}; not timing")
        return 1
    if args.skip_timing:
        return 0
    with warnings.catch_warnings():
        if args.dry_run:
            warnings.simplefilter("ignore", UserWarning)  # eager FlexAttention's "unfused" notice
        rows = bench_prefill(shapes, dtype, device, on_gpu) + bench_decode(shapes, dtype, device, on_gpu)
    print_table(rows, device_name, judge=on_gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""GPU check of ``block_fp8_linear``: ``python -m kernels.block_fp8_bench`` (or step 1b of gpu_check).

Needs only torch and triton. First correctness on the GPU in bf16 and fp16 with real float8_e4m3fn
weights and 128x128 block scales (what the interpreter cannot check: its bf16 dot is wrong, it runs no
GPU tiles), against the fp32 reference; then time at MiMo-V2-Flash shapes vs the peer the kernel
replaces, measured in the same run: ``F.linear`` on the same weight already dequantized to bf16
(what serving without FP8 support costs in memory: 2x the weight bytes). Decode (few tokens) is
memory-bound, so reading half the bytes should show; prefill (thousands of tokens) is compute-bound
and weight-only FP8 runs bf16 tensor-core math, so parity is the goal there.

``--dry-run`` runs tiny shapes on the CPU through the Triton interpreter (fp32 / fp16; timings
meaningless): it only proves the script runs end to end.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import torch

E4M3_MAX = 448.0
BLOCK = 128
# (tokens, out_features, in_features): MiMo-V2-Flash's fused qkv of an SWA layer (64x192 + 8x192 + 8x128
# rows from 4096), an expert's gate_up (2x2048 from 4096) and down, the dense MLP's down (4096 from 16384)
GPU_SHAPES = [
    (m, n, k) for m in (1, 16, 4096) for n, k in ((14848, 4096), (4096, 4096), (4096, 2048), (4096, 16384))
]
DRY_RUN_SHAPES = [(3, 40, 48), (17, 130, 160)]


def random_case(m, n, k, dtype, device, block_k):
    g = torch.Generator(device="cpu").manual_seed(m * 7 + n * 3 + k)
    weight = (torch.randn(n, k, generator=g) * 60).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    scale_inv = torch.rand(-(-n // BLOCK), -(-k // block_k), generator=g) * 1e-3 + 1e-4
    scale_row = torch.arange(n, dtype=torch.int32) // BLOCK
    x = torch.randn(m, k, generator=g).to(dtype)
    return [t.to(device) for t in (x, weight, scale_inv, scale_row)]


def check(shapes, dtypes, device, block_k) -> list[str]:
    from kernels import block_fp8_linear
    from kernels.block_fp8_reference import block_fp8_linear_reference

    failures = []
    for dtype in dtypes:
        tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16 output rounding is 2^-8 relative
        for m, n, k in shapes:
            x, weight, scale_inv, scale_row = random_case(m, n, k, dtype, device, block_k)
            got = block_fp8_linear(x, weight, scale_inv, scale_row, block_k=block_k).float()
            want = block_fp8_linear_reference(x.float(), weight, scale_inv, scale_row, block_k=block_k)
            error = float((got - want).abs().max() / want.abs().max())
            status = "ok" if error <= tolerance else "FAIL"
            print(f"  {str(dtype):15s} {m:5d} x {n:5d} x {k:5d}: max rel error {error:.2e} {status}")
            if error > tolerance:
                failures.append(f"{dtype} {m}x{n}x{k}: {error:.2e} > {tolerance}")
    return failures


def bench(shapes, device) -> None:
    import torch.nn.functional as F
    import triton

    from kernels import block_fp8_linear
    from kernels.block_fp8_reference import dequantize_block_fp8

    print(f"{'tokens x out x in':>22s} {'fp8 kernel ms':>14s} {'bf16 F.linear ms':>17s} {'ratio':>6s}")
    for m, n, k in shapes:
        x, weight, scale_inv, scale_row = random_case(m, n, k, torch.bfloat16, device, BLOCK)
        dense = dequantize_block_fp8(weight, scale_inv, scale_row, block_k=BLOCK, dtype=torch.bfloat16)
        ours = triton.testing.do_bench(
            functools.partial(block_fp8_linear, x, weight, scale_inv, scale_row, block_k=BLOCK),
            return_mode="median",
        )
        peer = triton.testing.do_bench(functools.partial(F.linear, x, dense), return_mode="median")
        print(f"{m:>6d} x {n:>5d} x {k:>5d} {ours:14.3f} {peer:17.3f} {peer / ours:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes in the Triton interpreter")
    args = parser.parse_args(argv)
    start = time.time()
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        failures = check(DRY_RUN_SHAPES, (torch.float32, torch.float16), torch.device("cpu"), 32)
    elif not torch.cuda.is_available():
        print("no CUDA device (use --dry-run on a CPU)")
        return 2
    else:
        device = torch.device("cuda")
        print(f"block_fp8_linear on {torch.cuda.get_device_name()}: correctness vs the fp32 reference")
        failures = check(GPU_SHAPES, (torch.bfloat16, torch.float16), device, BLOCK)
        if not failures:
            bench(GPU_SHAPES, device)
    print(
        f"block_fp8_linear: {'FAILED ' + '; '.join(failures) if failures else 'ok'} in {time.time() - start:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

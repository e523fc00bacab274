"""Launcher of the block-FP8 linear kernel: checks the inputs, picks the tiles, computes the grid.

Kept apart from ``kernels.block_fp8`` so that importing ``kernels`` does not import Triton.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton

from kernels.block_fp8_kernel import block_fp8_linear_kernel

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MIN_DOT_DIM = 16  # tl.dot needs every dimension >= 16 on GPUs
ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
WEIGHT_DTYPES = (torch.float8_e4m3fn,)


@dataclass(frozen=True)
class LinearTiles:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def pick_tiles(num_tokens: int, quant_block_k: int) -> LinearTiles:
    """Small fixed tiles in the interpreter (so tests cross tile edges); on GPUs a token tile sized to
    the batch: decode steps (a few tokens) take 16 rows instead of wasting a 128-row tile, prefill
    chunks use the wide one. A k-tile never straddles a scale block (``quant_block_k % block_k == 0``)."""
    if INTERPRET:
        return LinearTiles(16, 16, MIN_DOT_DIM, 1, 1)
    # Sized so that acc and the partial product fit the registers on sm_90 (checked ahead of time
    # by tests/kernels/sm90_compile.py: 128 x 128 tiles with k-tiles of 128 spill)
    if num_tokens <= 16:
        return LinearTiles(16, 64, min(128, quant_block_k), 4, 4)
    if num_tokens <= 64:
        return LinearTiles(64, 64, min(64, quant_block_k), 4, 3)
    return LinearTiles(128, 64, min(64, quant_block_k), 4, 3)


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(f"block_fp8_linear: {problem}")


def launch_block_fp8_linear(x, weight, scale_inv, scale_row, *, block_k: int, bias=None) -> torch.Tensor:
    _check(
        x.dim() == 2 and weight.dim() == 2, f"x and weight must be 2-D, got {x.dim()}-D and {weight.dim()}-D"
    )
    num_tokens, in_features = x.shape
    out_features = weight.shape[0]
    _check(x.dtype in ACTIVATION_DTYPES, f"x dtype {x.dtype} (use float16, bfloat16 or float32)")
    _check(weight.dtype in WEIGHT_DTYPES, f"weight dtype {weight.dtype} (expected torch.float8_e4m3fn)")
    _check(weight.shape[1] == in_features, f"weight {tuple(weight.shape)} does not take x {tuple(x.shape)}")
    _check(
        block_k >= MIN_DOT_DIM and block_k % MIN_DOT_DIM == 0,
        f"block_k {block_k} must be a multiple of {MIN_DOT_DIM}",
    )
    num_k_blocks = -(-in_features // block_k)
    _check(
        scale_inv.dtype == torch.float32 and scale_inv.dim() == 2 and scale_inv.shape[1] == num_k_blocks,
        f"scale_inv must be float32 [num_scale_rows, {num_k_blocks}], got {scale_inv.dtype} "
        f"{tuple(scale_inv.shape)}",
    )
    _check(
        scale_row.dtype == torch.int32 and tuple(scale_row.shape) == (out_features,),
        f"scale_row must be int32 [{out_features}], got {scale_row.dtype} {tuple(scale_row.shape)}",
    )
    if bias is not None:
        _check(tuple(bias.shape) == (out_features,), f"bias {tuple(bias.shape)} is not [{out_features}]")
    for name, t in (("x", x), ("weight", weight), ("scale_inv", scale_inv), ("scale_row", scale_row)):
        _check(t.stride(-1) == 1, f"{name} must have a contiguous last dim")
        _check(t.device == x.device, f"{name} is on {t.device}, x on {x.device}")
    out = torch.empty(num_tokens, out_features, dtype=x.dtype, device=x.device)
    if num_tokens == 0 or out_features == 0:
        return out
    tiles = pick_tiles(num_tokens, block_k)
    _check(block_k % tiles.block_k == 0, f"block_k {block_k} is not a multiple of the k-tile {tiles.block_k}")
    grid = (triton.cdiv(num_tokens, tiles.block_m), triton.cdiv(out_features, tiles.block_n))
    block_fp8_linear_kernel[grid](
        x,
        weight,
        scale_inv,
        scale_row,
        bias if bias is not None else x,
        out,
        num_tokens,
        out_features,
        in_features,
        x.stride(0),
        weight.stride(0),
        scale_inv.stride(0),
        out.stride(0),
        QUANT_BLOCK_K=block_k,
        HAS_BIAS=bias is not None,
        # fp32 activations get an fp32 product (no TF32 rounding), matching the reference; the
        # option only exists for fp32 dots (16-bit ones take the default)
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else None,
        BLOCK_M=tiles.block_m,
        BLOCK_N=tiles.block_n,
        BLOCK_K=tiles.block_k,
        num_warps=tiles.num_warps,
        num_stages=tiles.num_stages,
    )
    return out

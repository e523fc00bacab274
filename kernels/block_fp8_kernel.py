"""Triton kernel behind ``kernels.block_fp8_linear``: one program computes one [BLOCK_M, BLOCK_N] tile.

    out[m, n] = sum over k-tiles t of  scale_inv[scale_row[n], t*BLOCK_K // QUANT_BLOCK_K]
                                       * sum_{k in t} x[m, k] * weight[n, k]

BLOCK_K divides QUANT_BLOCK_K, so every k-tile lies inside one quantization block and takes one scale
per output column: the FP8 tile is widened (exactly) to the activation dtype, multiplied on the tensor
cores with fp32 accumulation, and the partial product is scaled in fp32 before it joins ``acc``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def block_fp8_linear_kernel(
    x_ptr,  # [num_tokens, in_features]
    w_ptr,  # float8_e4m3fn [out_features, in_features]
    scale_ptr,  # float32 [num_scale_rows, num_k_blocks]
    scale_row_ptr,  # int32 [out_features]
    bias_ptr,  # [out_features] (unused unless HAS_BIAS)
    out_ptr,  # [num_tokens, out_features]
    num_tokens,
    out_features,
    in_features,
    stride_xm,
    stride_wn,
    stride_sr,
    stride_om,
    QUANT_BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    # rows [pid_m * BLOCK_M, +BLOCK_M) of x and out; output columns [pid_n * BLOCK_N, +BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < num_tokens
    mask_n = offs_n < out_features
    scale_rows = tl.load(scale_row_ptr + offs_n, mask=mask_n, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, in_features, BLOCK_K):
        k = k_start + offs_k
        mask_k = k < in_features
        # masked lanes must read 0: they join the dot product
        a = tl.load(
            x_ptr + offs_m[:, None] * stride_xm + k[None, :],
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        # the weight tile read transposed: [BLOCK_K, BLOCK_N]
        w = tl.load(
            w_ptr + offs_n[None, :] * stride_wn + k[:, None],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        scale = tl.load(scale_ptr + scale_rows * stride_sr + k_start // QUANT_BLOCK_K, mask=mask_n, other=0.0)
        partial = tl.dot(a, w.to(a.dtype), input_precision=DOT_PRECISION)
        acc += partial * scale[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

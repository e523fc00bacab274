"""Plain PyTorch definition of ``block_fp8_linear``, written to be read, not to be fast.

The CPU engine runs this (dequantizing one layer's weight for the call, never the whole model); the
Triton kernel is tested against it, and it against a per-block loop (``tests/kernels``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dequantize_block_fp8(
    weight: torch.Tensor,  # float8_e4m3fn [..., out_features, in_features]
    scale_inv: torch.Tensor,  # float32 [..., num_scale_rows, ceil(in_features / block_k)]
    scale_row: torch.Tensor,  # int [out_features]
    *,
    block_k: int,
    dtype: torch.dtype,
) -> torch.Tensor:  # [..., out_features, in_features] in ``dtype``
    """``weight[n, k] * scale_inv[scale_row[n], k // block_k]``, computed in fp32, rounded once to ``dtype``."""
    in_features = weight.shape[-1]
    per_row = scale_inv.index_select(-2, scale_row.long())  # [..., out_features, num_k_blocks]
    per_element = per_row.repeat_interleave(block_k, dim=-1)[..., :in_features]
    return (weight.float() * per_element.float()).to(dtype)


def block_fp8_linear_reference(
    x: torch.Tensor,  # [num_tokens, in_features]
    weight: torch.Tensor,  # float8_e4m3fn [out_features, in_features]
    scale_inv: torch.Tensor,  # float32 [num_scale_rows, ceil(in_features / block_k)]
    scale_row: torch.Tensor,  # int [out_features]
    *,
    block_k: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:  # [num_tokens, out_features], dtype of x
    """Same contract as ``kernels.block_fp8_linear``: dequantize to the dtype of ``x``, then one matmul."""
    w = dequantize_block_fp8(weight, scale_inv, scale_row, block_k=block_k, dtype=x.dtype)
    return F.linear(x, w, bias)

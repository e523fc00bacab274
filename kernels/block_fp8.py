"""Block-scaled FP8 linear layers: the engine's matmul seam for FP8 e4m3 checkpoints on GPUs."""

from __future__ import annotations

import torch


def block_fp8_linear(
    x: torch.Tensor,  # [num_tokens, in_features], float16 / bfloat16 / float32
    weight: torch.Tensor,  # float8_e4m3fn [out_features, in_features]
    scale_inv: torch.Tensor,  # float32 [num_scale_rows, ceil(in_features / block_k)]
    scale_row: torch.Tensor,  # int32 [out_features]: the row of scale_inv that scales each output
    *,
    block_k: int,
    bias: torch.Tensor | None = None,  # [out_features], dtype of x
) -> torch.Tensor:  # [num_tokens, out_features], dtype of x
    """``x @ W.T (+ bias)`` for ``W[n, k] = weight[n, k] * scale_inv[scale_row[n], k // block_k]``.

    This is the DeepSeek / MiMo-V2 block format (``weight_scale_inv`` multiplies, despite its name)
    with one indirection: ``scale_row`` names each output row's scale row, so weights fused from
    several checkpoint tensors (q, k and v; gate and up) keep each part's own blocks even where a part
    is not a multiple of the block height. For one checkpoint tensor it is ``arange(out) // block_n``.

    Weight-only: the FP8 weight tile is widened to the dtype of ``x`` inside the kernel (exact: every
    e4m3 value is a bf16 / fp16 value), multiplied in that dtype with fp32 accumulation, and each
    ``block_k``-wide partial product is scaled once in fp32. The weights are never written out in a
    wider dtype. Runs the Triton kernel (on CPU only under ``TRITON_INTERPRET=1``);
    ``kernels.block_fp8_reference`` is the plain PyTorch definition.
    """
    from kernels.block_fp8_launch import launch_block_fp8_linear

    return launch_block_fp8_linear(x, weight, scale_inv, scale_row, block_k=block_k, bias=bias)

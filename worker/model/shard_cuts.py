"""The slice of each checkpoint tensor a tensor-parallel rank reads (``tensor_parallel.py`` says why).

A projection's checkpoint tensor is ``[out, in]``. Column-parallel linears (q/k/v, gate/up) take rows
``[lo, hi)``, row-parallel ones (o_proj, down) take columns. Block-FP8 tensors keep their format
through the cut: a row cut takes the scale rows ``[lo // 128, ceil(hi / 128))`` (``Linear`` maps each
held row to its scale row from the cut's offset), a column cut the scale columns
``[lo // 128, ceil(hi / 128))``, which is exact only when ``lo`` is a multiple of 128: otherwise (on
any rank) the tensor is dequantized whole and the linear held in the model dtype (``fp8_column_cut_aligned``).
Every MiMo-V2 width is a multiple of 128 per rank up to TP=8, so the published checkpoints stay FP8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.model.config import CheckpointError, ModelConfig
from worker.model.fp8_format import BlockFP8Format, dequantize_weight
from worker.model.tensor_parallel import TensorParallel


@dataclass(frozen=True)
class Cut:
    """Rows (``dim=0``) or columns (``dim=1``) ``[lo, hi)`` of a tensor whose ``dim`` is ``total`` long."""

    dim: int
    lo: int
    hi: int
    total: int


def linear_cuts(config: ModelConfig, tp: TensorParallel, layer_idx: int, name: str) -> list[Cut | None]:
    """Per part of our linear ``name`` (``attn.qkv`` has q, k, v), the cut this rank reads; all None
    for one rank."""
    parts = 3 if name == "attn.qkv" else 2 if name == "mlp.gate_up" else 1
    if tp.size == 1:
        return [None] * parts
    hd, vhd = config.head_dim, config.v_head_dim
    if name.startswith("attn."):
        q_lo, q_hi = tp.split(config.num_attention_heads)
        if name == "attn.o_proj":
            return [Cut(1, q_lo * vhd, q_hi * vhd, config.num_attention_heads * vhd)]
        kv = config.num_kv_heads(layer_idx)
        kv_lo, kv_hi = tp.kv_heads(kv)
        return [
            Cut(0, q_lo * hd, q_hi * hd, config.num_attention_heads * hd),
            Cut(0, kv_lo * hd, kv_hi * hd, kv * hd),
            Cut(0, kv_lo * vhd, kv_hi * vhd, kv * vhd),
        ]
    if config.mlp_layer_types[layer_idx] == "dense":
        inter = config.intermediate_size
        lo, hi = tp.split(inter)
    else:
        if tp.expert_parallel:
            return [None] * parts  # whole experts
        inter = config.moe_intermediate_size
        lo, hi = tp.expert_width(inter)
    return [Cut(1, lo, hi, inter)] if name == "mlp.down" else [Cut(0, lo, hi, inter)] * 2


def fp8_column_cut_aligned(cuts: list[Cut | None], fmt: BlockFP8Format) -> bool:
    """False when some rank's column cut would start inside a scale block: the ranks' cuts start at
    multiples of the cut's width, so that is when the width is not a multiple of the block. Every
    rank then holds the linear dequantized (the same choice on every rank, the same memory)."""
    return all(cut is None or cut.dim == 0 or (cut.hi - cut.lo) % fmt.block_in == 0 for cut in cuts)


def cut_tensor(
    weight: torch.Tensor,
    scale_inv: torch.Tensor | None,
    cut: Cut | None,
    *,
    fmt: BlockFP8Format | None,
    keep_fp8: bool,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This rank's ``(weight, scale_inv)`` of one checkpoint tensor; ``scale_inv`` is None once a FP8
    tensor had to be dequantized (``keep_fp8`` False with a column cut)."""
    if cut is None:
        return weight, scale_inv
    if weight.shape[cut.dim] != cut.total:
        raise CheckpointError(
            f"tensor {name} has {weight.shape[cut.dim]} {'rows' if cut.dim == 0 else 'columns'}, "
            f"expected {cut.total} from config.json"
        )
    if scale_inv is not None and not keep_fp8:
        weight, scale_inv = dequantize_weight(weight, scale_inv, fmt, torch.float32), None
    weight = weight.narrow(cut.dim, cut.lo, cut.hi - cut.lo)
    if scale_inv is not None:
        block = fmt.block_out if cut.dim == 0 else fmt.block_in
        first, end = cut.lo // block, -(-cut.hi // block)
        scale_inv = scale_inv.narrow(cut.dim, first, end - first)
    return weight, scale_inv

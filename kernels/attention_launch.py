"""Launcher of the paged attention kernels: checks the inputs, picks tiles and split-KV, computes grids.

Kept apart from ``kernels.paged_attention`` so that importing ``kernels`` does not import Triton; this
module is imported at the first kernel call (set ``TRITON_INTERPRET=1`` before that to run on CPU).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton

from kernels.attention_kernel import merge_splits_kernel, paged_attention_kernel

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
MIN_DOT_DIM = 16  # tl.dot needs every dimension >= 16 on GPUs
MAX_SPLITS = 32
MIN_KEYS_PER_SPLIT = 256  # a split should stream at least this many keys to be worth its merge
LOG2_E = 1.4426950408889634


@dataclass(frozen=True)
class HeadDimSplit:
    """A head dim as one or two power-of-two pieces (192 -> 128 + 64) so padding wastes little."""

    main: int
    tail: int  # 0: no second piece

    @classmethod
    def of(cls, head_dim: int) -> HeadDimSplit:
        padded = max(MIN_DOT_DIM, triton.next_power_of_2(head_dim))
        if head_dim <= 2 * MIN_DOT_DIM or padded == head_dim:
            return cls(padded, 0)
        main = padded // 2
        tail = max(MIN_DOT_DIM, triton.next_power_of_2(head_dim - main))
        return cls(padded, 0) if main + tail >= padded else cls(main, tail)


@dataclass(frozen=True)
class TileConfig:
    block_m: int  # query rows per program: tokens x padded GQA group
    block_n: int  # keys per inner tile
    num_warps: int
    num_stages: int


def pick_tile_config(*, is_decode: bool, group_pad: int, head_dims: int) -> TileConfig:
    """Fixed tiles for the interpreter (small, so tests visit several tiles); GPU defaults otherwise."""
    if INTERPRET:
        return TileConfig(block_m=max(16, group_pad), block_n=16, num_warps=1, num_stages=1)
    if is_decode:
        return TileConfig(block_m=max(16, group_pad), block_n=64, num_warps=4, num_stages=3)
    num_stages = 2 if head_dims > 384 else 3
    return TileConfig(block_m=max(128, group_pad), block_n=64, num_warps=8, num_stages=num_stages)


def pick_num_splits(*, num_programs: int, max_keys: int, device: torch.device) -> int:
    """Split-KV only when the grid alone cannot fill the GPU and the contexts are long."""
    if INTERPRET or device.type != "cuda":
        return 1
    target_programs = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    if num_programs >= target_programs:
        return 1
    return max(1, min(MAX_SPLITS, math.ceil(target_programs / num_programs), max_keys // MIN_KEYS_PER_SPLIT))


def _autotuned(kernel, is_decode: bool):
    """A small autotune set, GPUs only (never under the interpreter). Prefill also tunes BLOCK_M."""
    if is_decode:
        shapes = [(None, n, 4, s) for n in (32, 64, 128) for s in (2, 3)]
    else:
        shapes = [
            (128, 64, 8, 3),
            (128, 64, 8, 2),
            (128, 128, 8, 2),
            (128, 32, 4, 3),
            (64, 64, 4, 3),
            (64, 32, 4, 3),
        ]
    configs = [
        triton.Config(
            {"BLOCK_N": n} if m is None else {"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s
        )
        for m, n, w, s in shapes
    ]
    key = ["GROUP_PAD", "BLOCK_SIZE", "WINDOW", "HEAD_QK_MAIN", "HEAD_QK_TAIL", "HEAD_V_PAD", "NUM_SPLITS",
           "HAS_SINKS", "DOT_PRECISION"]  # fmt: skip
    return triton.autotune(configs=configs, key=key)(kernel)


_PREFILL_TUNED = None if INTERPRET else _autotuned(paged_attention_kernel, is_decode=False)
_DECODE_TUNED = None if INTERPRET else _autotuned(paged_attention_kernel, is_decode=True)
MAX_TUNED_GROUP_PAD = 64  # prefill configs have BLOCK_M >= 64 rows; larger groups use the fixed config


def _error(name: str, problem: str) -> ValueError:
    return ValueError(f"paged_attention: {name} {problem}")


def _check_inputs(
    q, k_cache, v_cache, block_table, block_table_start, query_start_loc, seq_lens, window, sinks, out
):
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.dim() != 4:
        raise _error(
            "q/k_cache/v_cache", f"must be 3-d/4-d/4-d, got {q.dim()}/{k_cache.dim()}/{v_cache.dim()}"
        )
    if v_cache.shape[:3] != k_cache.shape[:3] or q.shape[2] != k_cache.shape[3]:
        raise _error(
            "shapes",
            f"q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v_cache "
            f"{tuple(v_cache.shape)} do not agree (see the shape comments of paged_attention)",
        )
    if q.shape[1] % k_cache.shape[2] != 0:
        raise _error("q", f"heads {q.shape[1]} are not a multiple of the {k_cache.shape[2]} kv heads")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise _error("q", f"dtype {q.dtype} is not float16, bfloat16 or float32")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
        if t is not None and t.dtype != q.dtype:
            raise _error(name, f"dtype {t.dtype} != q dtype {q.dtype}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
        if t is not None and t.stride(-1) != 1:
            raise _error(name, "must have a contiguous last dim")
    num_seqs = seq_lens.shape[0]
    for name, t, shape in (
        ("block_table", block_table, (num_seqs, block_table.shape[-1])),
        ("block_table_start", block_table_start, (num_seqs,)),
        ("query_start_loc", query_start_loc, (num_seqs + 1,)),
        ("seq_lens", seq_lens, (num_seqs,)),
    ):
        if t.dtype != torch.int32 or tuple(t.shape) != shape or not t.is_contiguous():
            raise _error(name, f"must be contiguous int32 {shape}, got {t.dtype} {tuple(t.shape)}")
    if window < 0:
        raise _error("window", f"must be >= 0, got {window}")
    if sinks is not None and (
        sinks.shape != (q.shape[1],) or sinks.dtype != torch.float32 or not sinks.is_contiguous()
    ):
        raise _error(
            "sinks", f"must be contiguous float32 [num_q_heads], got {sinks.dtype} {tuple(sinks.shape)}"
        )
    if out is not None and out.shape != (q.shape[0], q.shape[1], v_cache.shape[3]):
        raise _error("out", f"must be [num_tokens, num_q_heads, head_dim_v], got {tuple(out.shape)}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache), ("block_table", block_table),
                    ("block_table_start", block_table_start), ("query_start_loc", query_start_loc),
                    ("seq_lens", seq_lens), ("sinks", sinks), ("out", out)):  # fmt: skip
        if t is not None and t.device != q.device:
            raise _error(name, f"is on {t.device}, q on {q.device}")


def launch_paged_attention(
    q, k_cache, v_cache, block_table, block_table_start, query_start_loc, seq_lens,
    *, window: int, sinks: torch.Tensor | None = None, scale: float, out: torch.Tensor | None = None,
    num_splits: int | None = None, tile_counts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """``kernels.paged_attention`` with two test/bench knobs.

    ``num_splits`` forces split-KV (None: chosen from the grid size and the table width).
    ``tile_counts=True`` also returns int32 [grid_tiles, num_kv_heads, num_splits]: how many key tiles
    each program visited (0 for spare programs), used to prove sliding windows cost O(window).
    """
    _check_inputs(
        q, k_cache, v_cache, block_table, block_table_start, query_start_loc, seq_lens, window, sinks, out
    )
    num_tokens, num_q_heads, head_dim_qk = q.shape
    _, block_size, num_kv_heads, head_dim_v = v_cache.shape
    num_seqs = seq_lens.shape[0]
    if out is None:
        out = torch.empty(num_tokens, num_q_heads, head_dim_v, dtype=q.dtype, device=q.device)
    if num_tokens == 0 or num_seqs == 0:
        return out, None

    group = num_q_heads // num_kv_heads
    group_pad = triton.next_power_of_2(group)
    qk_split = HeadDimSplit.of(head_dim_qk)
    head_v_pad = max(MIN_DOT_DIM, triton.next_power_of_2(head_dim_v))
    is_decode = num_tokens == num_seqs  # every sequence has at least one query, so all have exactly one
    head_dims = qk_split.main + qk_split.tail + head_v_pad
    config = pick_tile_config(is_decode=is_decode, group_pad=group_pad, head_dims=head_dims)
    tokens_per_tile = config.block_m // group_pad
    grid_tiles = num_tokens // tokens_per_tile + num_seqs  # upper bound, see attention_kernel._find_seq

    if num_splits is None:
        table_keys = block_table.shape[1] * block_size
        max_keys = min(table_keys, window + tokens_per_tile) if window > 0 else table_keys
        busy_programs = (num_seqs if is_decode else grid_tiles) * num_kv_heads
        num_splits = pick_num_splits(num_programs=busy_programs, max_keys=max_keys, device=q.device)
    if num_splits < 1:
        raise _error("num_splits", f"must be >= 1, got {num_splits}")

    float_scratch = torch.empty(1, dtype=torch.float32, device=q.device)  # stands in for absent tensors
    partial_acc = partial_max_sum = float_scratch
    if num_splits > 1:
        partial_acc = torch.empty(
            num_tokens, num_q_heads, num_splits, head_dim_v, dtype=torch.float32, device=q.device
        )
        partial_max_sum = torch.empty(
            num_tokens, num_q_heads, num_splits, 2, dtype=torch.float32, device=q.device
        )
    counts = None
    if tile_counts:
        counts = torch.zeros(grid_tiles, num_kv_heads, num_splits, dtype=torch.int32, device=q.device)
    sinks_or_scratch = sinks if sinks is not None else float_scratch

    args = (
        q, k_cache, v_cache, out,
        block_table, block_table_start, query_start_loc, seq_lens, sinks_or_scratch,
        partial_acc, partial_max_sum, counts if counts is not None else block_table_start,
        num_seqs,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table.stride(0),
        scale * LOG2_E,
    )  # fmt: skip
    meta = dict(
        GROUP=group, GROUP_PAD=group_pad, BLOCK_SIZE=block_size, WINDOW=window, HAS_SINKS=sinks is not None,
        HEAD_QK=head_dim_qk, HEAD_QK_MAIN=qk_split.main, HEAD_QK_TAIL=qk_split.tail,
        HEAD_V=head_dim_v, HEAD_V_PAD=head_v_pad, NUM_SPLITS=num_splits, COUNT_TILES=tile_counts,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )  # fmt: skip
    if INTERPRET or tile_counts or (not is_decode and group_pad > MAX_TUNED_GROUP_PAD):
        paged_attention_kernel[(grid_tiles, num_kv_heads, num_splits)](
            *args, **meta, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )  # fmt: skip
    elif is_decode:
        _DECODE_TUNED[(grid_tiles, num_kv_heads, num_splits)](*args, **meta, BLOCK_M=config.block_m)
    else:

        def grid(tuned_meta):
            return num_tokens // (tuned_meta["BLOCK_M"] // group_pad) + num_seqs, num_kv_heads, num_splits

        _PREFILL_TUNED[grid](*args, **meta)

    if num_splits > 1:
        merge_splits_kernel[(num_tokens, num_q_heads)](
            partial_acc, partial_max_sum, sinks_or_scratch, out, num_q_heads, out.stride(0), out.stride(1),
            HAS_SINKS=sinks is not None, HEAD_V=head_dim_v, HEAD_V_PAD=head_v_pad, NUM_SPLITS=num_splits,
            NUM_SPLITS_PAD=triton.next_power_of_2(num_splits), num_warps=1 if INTERPRET else 4,
        )  # fmt: skip
    return out, counts

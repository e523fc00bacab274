"""Paged attention over packed variable-length queries: the engine's attention seam on GPUs."""

from __future__ import annotations

import torch


def paged_attention(
    q: torch.Tensor,  # [num_tokens, num_q_heads, head_dim_qk]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_qk]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_v]
    block_table: torch.Tensor,  # int32 [num_seqs, max_blocks]
    block_table_start: torch.Tensor,  # int32 [num_seqs]
    query_start_loc: torch.Tensor,  # int32 [num_seqs + 1]
    seq_lens: torch.Tensor,  # int32 [num_seqs]
    *,
    window: int,
    sinks: torch.Tensor | None = None,  # float32 [num_q_heads]
    scale: float,
    out: torch.Tensor | None = None,  # [num_tokens, num_q_heads, head_dim_v]
) -> torch.Tensor:  # [num_tokens, num_q_heads, head_dim_v], dtype of q
    """Attend each sequence's new queries to its paged KV (cached prefix plus the new tokens), causally.

    Sequence ``i`` owns queries ``q[query_start_loc[i]:query_start_loc[i + 1]]`` (at least one) at
    positions ``seq_lens[i] - q_len ... seq_lens[i] - 1``; its keys/values must already be in the cache
    (call ``write_kv`` first). Column ``j`` of ``block_table[i]`` is the physical block of logical block
    ``block_table_start[i] + j`` (block = ``block_size`` positions).

    ``window == 0`` is full causal attention; otherwise a query at position ``p`` sees keys
    ``[max(0, p - window + 1), p]``. KV outside those ranges, and table entries of blocks entirely
    outside them, are never read (they may be freed or reused) and out-of-window blocks are skipped,
    so a sliding-window layer costs O(window) per query tile. ``sinks`` adds one logit per query head to
    the softmax denominator only (MiMo-V2 SWA layers). Query head ``h`` reads KV head
    ``h // (num_q_heads // num_kv_heads)``. Softmax math is float32; ``q`` and the caches share one
    dtype (float16, bfloat16 or float32). Writes into ``out`` when given and returns it. Runs the
    Triton kernels (on CPU only under ``TRITON_INTERPRET=1``); ``kernels.reference`` is the plain
    PyTorch definition.
    """
    from kernels.attention_launch import launch_paged_attention

    result, _ = launch_paged_attention(
        q,
        k_cache,
        v_cache,
        block_table,
        block_table_start,
        query_start_loc,
        seq_lens,
        window=window,
        sinks=sinks,
        scale=scale,
        out=out,
    )
    return result

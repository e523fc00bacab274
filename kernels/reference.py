"""Plain PyTorch definitions of ``paged_attention`` and ``write_kv``, written to be read, not to be fast.

The kernels are tested against these; these are tested against a dense implementation built straight
from the definition (``tests/kernels``). Math is float32; results come back in the dtype of ``q``.
"""

from __future__ import annotations

import torch


def visible_keys(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """bool [len(q_pos), len(k_pos)]: causal, and within ``window`` keys (counting itself) if window > 0."""
    visible = k_pos[None, :] <= q_pos[:, None]
    if window > 0:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    return visible


def gather_positions(
    cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim]
    block_table_row: list[int],
    block_table_start: int,
    first_pos: int,
    end_pos: int,
) -> torch.Tensor:  # [end_pos - first_pos, num_kv_heads, head_dim]
    """The cached rows of positions ``[first_pos, end_pos)`` of one sequence, through its block table."""
    block_size = cache.shape[1]
    first_block, last_block = first_pos // block_size, (end_pos - 1) // block_size
    columns = range(first_block - block_table_start, last_block - block_table_start + 1)
    if columns.start < 0 or columns.stop > len(block_table_row):
        raise ValueError(
            f"block table (start {block_table_start}, {len(block_table_row)} columns) does "
            f"not cover logical blocks {first_block}..{last_block}"
        )
    blocks = cache[[block_table_row[c] for c in columns]]  # [num_needed_blocks, block_size, heads, dim]
    rows = blocks.reshape(-1, *cache.shape[2:])
    offset = first_block * block_size  # position of rows[0]
    return rows[first_pos - offset : end_pos - offset]


def paged_attention_reference(
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
    out: torch.Tensor | None = None,
) -> torch.Tensor:  # [num_tokens, num_q_heads, head_dim_v]
    """Same contract as ``kernels.paged_attention``; reads only the KV of positions some query sees."""
    num_q_heads = q.shape[1]
    group = num_q_heads // k_cache.shape[2]
    result = torch.zeros(q.shape[0], num_q_heads, v_cache.shape[3], dtype=torch.float32, device=q.device)
    starts, lens = query_start_loc.tolist(), seq_lens.tolist()
    for seq, (q_begin, q_end, seq_len) in enumerate(zip(starts[:-1], starts[1:], lens, strict=True)):
        q_len = q_end - q_begin
        if q_len == 0:
            continue
        first_query_pos = seq_len - q_len
        # [first_key, seq_len): every key some query of this sequence may see.
        first_key = max(0, first_query_pos - window + 1) if window > 0 else 0
        table_row, table_start = block_table[seq].tolist(), int(block_table_start[seq])
        k = gather_positions(k_cache, table_row, table_start, first_key, seq_len).float()
        v = gather_positions(v_cache, table_row, table_start, first_key, seq_len).float()
        k = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [num_q_heads, num_keys, head_dim_qk]
        v = v.repeat_interleave(group, dim=1).transpose(0, 1)  # [num_q_heads, num_keys, head_dim_v]

        queries = q[q_begin:q_end].float().transpose(0, 1)  # [num_q_heads, q_len, head_dim_qk]
        logits = queries @ k.transpose(1, 2) * scale  # [num_q_heads, q_len, num_keys]
        q_pos = torch.arange(first_query_pos, seq_len, device=q.device)
        k_pos = torch.arange(first_key, seq_len, device=q.device)
        logits = logits.masked_fill(~visible_keys(q_pos, k_pos, window), float("-inf"))
        if sinks is not None:  # one extra column per head: joins the denominator, carries no value
            sink_column = sinks.float()[:, None, None].expand(num_q_heads, q_len, 1)
            logits = torch.cat([logits, sink_column], dim=-1)
        probs = torch.softmax(logits - logits.amax(dim=-1, keepdim=True), dim=-1)
        if sinks is not None:
            probs = probs[..., :-1]
        result[q_begin:q_end] = (probs @ v).transpose(0, 1)

    if out is None:
        return result.to(q.dtype)
    out.copy_(result)
    return out


def write_kv_reference(
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_qk]
    v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_v]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_qk]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_v]
    slot_mapping: torch.Tensor,  # int64 [num_tokens]
) -> None:
    """Same contract as ``kernels.write_kv``: token t goes to slot_mapping[t]; negative slots skip."""
    block_size = k_cache.shape[1]
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        block, offset = divmod(slot, block_size)
        k_cache[block, offset] = k[token]
        v_cache[block, offset] = v[token]

"""The PyTorch attention backend (CPU, and any device without the Triton kernels).

Decode queries of a step are attended together: their in-window KV positions are gathered into one
padded ``[num_seqs, max_keys]`` plan. Prefill chunks are attended one sequence at a time, reading only
the keys their window can reach, so a sliding-window layer costs O(window) per query either way.
"""

from __future__ import annotations

import torch

from worker.model.attention_metadata import AttentionMetadata, PagedKV


class TorchAttention:
    name = "torch"

    def forward(
        self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, pool: PagedKV, *, window, sinks, scale
    ):
        num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
        k_flat = k_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
        v_flat = v_cache.view(num_blocks * block_size, num_kv_heads, v_cache.shape[-1])
        k_flat.index_copy_(0, pool.slot_mapping, k.to(k_flat.dtype))
        v_flat.index_copy_(0, pool.slot_mapping, v.to(v_flat.dtype))

        out = q.new_empty(q.shape[0], q.shape[1], v_cache.shape[-1])
        plan = _plan(meta, pool, window, q.device)
        if plan.decode_tokens.numel():
            out[plan.decode_tokens] = _attend(
                q[plan.decode_tokens].unsqueeze(1),
                k_flat,
                v_flat,
                plan.decode_slots,
                plan.decode_mask,
                sinks,
                scale,
            ).squeeze(1)
        for first_token, num_tokens, slots, mask in plan.prefills:
            rows = slice(first_token, first_token + num_tokens)
            out[rows] = _attend(
                q[rows].unsqueeze(0), k_flat, v_flat, slots.unsqueeze(0), mask.unsqueeze(0), sinks, scale
            )[0]
        return out


class _Plan:
    def __init__(self, decode_tokens, decode_slots, decode_mask, prefills):
        self.decode_tokens = decode_tokens  # int64 [num_decodes]: packed row of each decode query
        self.decode_slots = decode_slots  # int64 [num_decodes, max_keys]
        self.decode_mask = decode_mask  # bool [num_decodes, 1, max_keys]: key visible to the query
        self.prefills = prefills  # list of (first_token, num_tokens, slots [keys], mask [num_tokens, keys])


def _plan(meta: AttentionMetadata, pool: PagedKV, window: int, device) -> _Plan:
    key = ("torch", window)
    if key not in pool.cache:
        pool.cache[key] = _build_plan(meta, pool, window, device)
    return pool.cache[key]


def _slots(pool: PagedKV, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    # positions: [n, keys] absolute token positions (all valid) -> physical slots [n, keys]
    logical = positions // pool.block_size - pool.block_table_start[rows].long()[:, None]
    physical = pool.block_table[rows].long().gather(1, logical)
    return physical * pool.block_size + positions % pool.block_size


def _build_plan(meta: AttentionMetadata, pool: PagedKV, window: int, device) -> _Plan:
    starts = meta.query_start_loc.tolist()
    decode_rows = [i for i, n in enumerate(meta.query_lens) if n == 1]
    if decode_rows:
        rows = torch.tensor(decode_rows, device=device)
        hi = meta.seq_lens.long()[rows]
        lo = (hi - window).clamp(min=0) if window else torch.zeros_like(hi)
        max_keys = int((hi - lo).max())
        positions = lo[:, None] + torch.arange(max_keys, device=device)[None, :]
        valid = positions < hi[:, None]
        positions = torch.where(valid, positions, lo[:, None])
        decode = (
            torch.tensor([starts[i] for i in decode_rows], device=device),
            _slots(pool, rows, positions),
            valid.unsqueeze(1),
        )
    else:
        empty = torch.empty(0, dtype=torch.long, device=device)
        decode = (empty, empty.view(0, 0), empty.view(0, 1, 0).bool())

    prefills = []
    for i, num_tokens in enumerate(meta.query_lens):
        if num_tokens == 1:
            continue
        hi = meta.context_lens[i]
        first_pos = hi - num_tokens
        lo = max(0, first_pos - window + 1) if window else 0
        key_pos = torch.arange(lo, hi, device=device)
        q_pos = torch.arange(first_pos, hi, device=device)
        mask = key_pos[None, :] <= q_pos[:, None]
        if window:
            mask &= key_pos[None, :] > q_pos[:, None] - window
        slots = _slots(pool, torch.tensor([i], device=device), key_pos[None, :])[0]
        prefills.append((starts[i], num_tokens, slots, mask))
    return _Plan(*decode, prefills)


def _attend(q, k_flat, v_flat, slots, mask, sinks, scale):
    # q: [n, q_len, Hq, D]; slots: [n, keys]; mask: [n, q_len, keys] -> [n, q_len, Hq, Dv]
    n, q_len, num_q_heads, head_dim = q.shape
    num_kv_heads = k_flat.shape[1]
    group = num_q_heads // num_kv_heads
    keys = k_flat[slots].float()  # [n, keys, Hkv, D]
    values = v_flat[slots].float()  # [n, keys, Hkv, Dv]
    qg = q.float().view(n, q_len, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)  # [n, Hkv, G, q, D]
    scores = torch.matmul(qg, keys.permute(0, 2, 3, 1).unsqueeze(2)) * scale  # [n, Hkv, G, q, keys]
    scores = scores.masked_fill(~mask[:, None, None, :, :], float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, num_kv_heads, group, 1, 1).expand(n, -1, -1, q_len, 1)
        scores = torch.cat([scores, sink], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if sinks is not None:
        probs = probs[..., :-1]
    out = torch.matmul(probs, values.permute(0, 2, 1, 3).unsqueeze(2))  # [n, Hkv, G, q, Dv]
    return out.permute(0, 3, 1, 2, 4).reshape(n, q_len, num_q_heads, -1).to(q.dtype)

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
                plan.decode_bias,
                sinks,
                scale,
            ).squeeze(1)
        for first_token, num_tokens, slots, bias in plan.prefills:
            rows = slice(first_token, first_token + num_tokens)
            out[rows] = _attend(
                q[rows].unsqueeze(0), k_flat, v_flat, slots.unsqueeze(0), bias.unsqueeze(0), sinks, scale
            )[0]
        return out


class _Plan:
    def __init__(self, decode_tokens, decode_slots, decode_bias, prefills):
        self.decode_tokens = decode_tokens  # int64 [num_decodes]: packed row of each decode query
        self.decode_slots = decode_slots  # int64 [num_decodes, max_keys]
        self.decode_bias = decode_bias  # fp32 [num_decodes, 1, max_keys]: 0 where visible, -inf elsewhere
        self.prefills = prefills  # list of (first_token, num_tokens, slots [keys], bias [num_tokens, keys])


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


def _bias(visible: torch.Tensor) -> torch.Tensor:
    return torch.zeros(visible.shape, device=visible.device).masked_fill_(~visible, float("-inf"))


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
            _bias(valid.unsqueeze(1)),
        )
    else:
        empty = torch.empty(0, dtype=torch.long, device=device)
        decode = (empty, empty.view(0, 0), torch.empty(0, 1, 0, device=device))

    # A sliding-window chunk is cut into query tiles of about one window, so each tile reads at most
    # 2 * window keys instead of the whole chunk plus its window.
    tile = max(window, 32) if window else None
    prefills = []
    for i, num_tokens in enumerate(meta.query_lens):
        if num_tokens == 1:
            continue
        seq_end = meta.context_lens[i]
        first_pos = seq_end - num_tokens
        step = tile or num_tokens
        for tile_start in range(0, num_tokens, step):
            q_lo, q_hi = first_pos + tile_start, min(first_pos + tile_start + step, seq_end)
            k_lo = max(0, q_lo - window + 1) if window else 0
            key_pos = torch.arange(k_lo, q_hi, device=device)
            q_pos = torch.arange(q_lo, q_hi, device=device)
            visible = key_pos[None, :] <= q_pos[:, None]
            if window:
                visible &= key_pos[None, :] > q_pos[:, None] - window
            slots = _slots(pool, torch.tensor([i], device=device), key_pos[None, :])[0]
            prefills.append((starts[i] + tile_start, q_hi - q_lo, slots, _bias(visible)))
    return _Plan(*decode, prefills)


def _attend(q, k_flat, v_flat, slots, bias, sinks, scale):
    # q: [n, q_len, Hq, D]; slots: [n, keys]; bias: [n, q_len, keys] -> [n, q_len, Hq, Dv]
    n, q_len, num_q_heads, head_dim = q.shape
    num_kv_heads = k_flat.shape[1]
    group = num_q_heads // num_kv_heads
    keys = k_flat[slots].float().permute(0, 2, 3, 1)  # [n, Hkv, D, keys]
    values = v_flat[slots].float().permute(0, 2, 1, 3)  # [n, Hkv, keys, Dv]
    # The query heads of one KV head are stacked into the rows of one matmul: [n, Hkv, G * q_len, D].
    qg = q.float().view(n, q_len, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    qg = qg.reshape(n, num_kv_heads, group * q_len, head_dim)
    scores = torch.matmul(qg, keys).mul_(scale).view(n, num_kv_heads, group, q_len, -1)
    scores += bias[:, None, None, :, :]
    if sinks is not None:
        sink = sinks.float().view(1, num_kv_heads, group, 1, 1).expand(n, -1, -1, q_len, 1)
        scores = torch.cat([scores, sink], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    if sinks is not None:
        probs = probs[..., :-1]
    probs = probs.reshape(n, num_kv_heads, group * q_len, -1)
    out = torch.matmul(probs, values).view(n, num_kv_heads, group, q_len, -1)  # [n, Hkv, G, q, Dv]
    return out.permute(0, 3, 1, 2, 4).reshape(n, q_len, num_q_heads, -1).to(q.dtype)

"""Triton kernels of paged attention: one kernel family for prefill, extend and decode, and a merge step.

One program handles one *query tile* of one sequence for one KV head: ``BLOCK_M`` rows made of
``BLOCK_M // GROUP_PAD`` consecutive query tokens times the ``GROUP`` query heads that share the KV head
(GQA packing: row ``r`` is token ``r // GROUP_PAD``, head offset ``r % GROUP_PAD``). It walks the keys in
tiles of ``BLOCK_N`` positions, gathering each key's physical slot through the block table, so a tile
may span several pages and ``BLOCK_SIZE`` (tokens per page) is independent of ``BLOCK_N``.

Which key tiles are visited (positions, for a tile whose queries sit at ``[p_min, p_max]``)::

    [0 ............ lo) never touched (lo = p_min - WINDOW + 1, or 0 for full attention)
    [lo ...... full_lo) masked tiles: inside some rows' windows only
    [full_lo . full_hi) unmasked tiles: every row sees every key (full_lo = p_max - WINDOW + 1,
                        full_hi = p_min + 1)
    [full_hi ... p_max] masked tiles: the causal diagonal
    (p_max ........... ) never touched

so a sliding-window tile costs O(WINDOW + BLOCK_M) keys however long the context is. With
``NUM_SPLITS > 1`` (split-KV, used for decode over long full-attention contexts) the visited tiles are
cut into ``NUM_SPLITS`` contiguous chunks, one per program along grid axis 2; each writes an
unnormalised partial (acc, max, sum) and ``merge_splits_kernel`` combines them. All softmax math is in
base 2: logits are pre-multiplied by ``scale * log2(e)``.
"""

import triton
import triton.language as tl


@triton.jit
def _find_seq(query_start_loc_ptr, tile_idx, num_seqs, TOKENS_PER_TILE: tl.constexpr):
    # Sequence i owns program tiles [qsl[i] // T + i, qsl[i + 1] // T + i + 1): an upper bound of its
    # ceil(q_len / T) tiles that needs no host-side prefix sum. Binary search for the owner of tile_idx.
    left = num_seqs * 0
    right = num_seqs
    while left < right:
        mid = (left + right) // 2
        first_tile = tl.load(query_start_loc_ptr + mid) // TOKENS_PER_TILE + mid
        if first_tile <= tile_idx:
            left = mid + 1
        else:
            right = mid
    return left - 1


@triton.jit(do_not_specialize=["num_seqs"])  # a specialised num_seqs == 1 would fold the search loop
def paged_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    block_table_ptr, block_table_start_ptr, query_start_loc_ptr, seq_lens_ptr, sinks_ptr,
    partial_acc_ptr, partial_max_sum_ptr, tile_counts_ptr,
    num_seqs,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_bt,
    qk_scale_log2,  # softmax scale * log2(e)
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, WINDOW: tl.constexpr, HAS_SINKS: tl.constexpr,
    HEAD_QK: tl.constexpr, HEAD_QK_MAIN: tl.constexpr, HEAD_QK_TAIL: tl.constexpr,
    HEAD_V: tl.constexpr, HEAD_V_PAD: tl.constexpr,
    NUM_SPLITS: tl.constexpr, COUNT_TILES: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    TOKENS_PER_TILE: tl.constexpr = BLOCK_M // GROUP_PAD
    tile_idx = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    seq = _find_seq(query_start_loc_ptr, tile_idx, num_seqs, TOKENS_PER_TILE)
    q_begin = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_begin
    first_token = (tile_idx - (q_begin // TOKENS_PER_TILE + seq)) * TOKENS_PER_TILE
    if first_token >= q_len:
        return  # a spare tile of the upper-bound grid
    seq_len = tl.load(seq_lens_ptr + seq)
    num_tile_tokens = tl.minimum(TOKENS_PER_TILE, q_len - first_token)
    p_min = seq_len - q_len + first_token  # position of the tile's first query
    p_max = p_min + num_tile_tokens - 1

    # Rows: GQA packing of (token, head-in-group).
    offs_m = tl.arange(0, BLOCK_M)
    row_head = kv_head * GROUP + offs_m % GROUP_PAD
    row_ok = (offs_m // GROUP_PAD < num_tile_tokens) & (offs_m % GROUP_PAD < GROUP)
    q_pos = p_min + offs_m // GROUP_PAD
    token_index = (q_begin + first_token + offs_m // GROUP_PAD).to(tl.int64)

    offs_d_main = tl.arange(0, HEAD_QK_MAIN)
    offs_d_tail = HEAD_QK_MAIN + tl.arange(0, HEAD_QK_TAIL if HEAD_QK_TAIL > 0 else 1)
    offs_dv = tl.arange(0, HEAD_V_PAD)
    q_rows = q_ptr + token_index[:, None] * stride_qt + row_head[:, None] * stride_qh
    q_main = tl.load(
        q_rows + offs_d_main[None, :], mask=row_ok[:, None] & (offs_d_main[None, :] < HEAD_QK), other=0.0
    )
    if HEAD_QK_TAIL > 0:
        q_tail = tl.load(
            q_rows + offs_d_tail[None, :], mask=row_ok[:, None] & (offs_d_tail[None, :] < HEAD_QK), other=0.0
        )

    # Key ranges (see module docstring); tiles are aligned to BLOCK_N in absolute positions.
    if WINDOW > 0:
        key_lo = tl.maximum(p_min - WINDOW + 1, 0)
        full_lo = tl.maximum(p_max - WINDOW + 1, 0)
    else:
        key_lo = p_min * 0
        full_lo = p_min * 0
    key_hi = p_max + 1
    full_hi = p_min + 1
    tile_lo = key_lo // BLOCK_N
    tile_hi = tl.cdiv(key_hi, BLOCK_N)
    inner_lo = tl.minimum(tl.maximum(tl.cdiv(full_lo, BLOCK_N), tile_lo), tile_hi)
    inner_hi = tl.minimum(tl.maximum(full_hi // BLOCK_N, inner_lo), tile_hi)
    # This split's share of [tile_lo, tile_hi).
    split_len = tl.cdiv(tile_hi - tile_lo, NUM_SPLITS)
    split_lo = tl.minimum(tile_lo + split * split_len, tile_hi)
    split_hi = tl.minimum(split_lo + split_len, tile_hi)

    block_table_row_ptr = block_table_ptr + seq.to(tl.int64) * stride_bt
    block_table_start = tl.load(block_table_start_ptr + seq)
    acc = tl.zeros([BLOCK_M, HEAD_V_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max of base-2 logits
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum of exp2(logit - m_i)

    # Phase 0: [tile_lo, inner_lo) masked; 1: [inner_lo, inner_hi) unmasked; 2: [inner_hi, tile_hi) masked.
    for phase in tl.static_range(3):
        if phase == 0:
            phase_lo, phase_hi = split_lo, tl.minimum(inner_lo, split_hi)
        elif phase == 1:
            phase_lo, phase_hi = tl.maximum(inner_lo, split_lo), tl.minimum(inner_hi, split_hi)
        else:
            phase_lo, phase_hi = tl.maximum(inner_hi, split_lo), split_hi
        for tile in range(phase_lo, phase_hi):
            key_pos = tile * BLOCK_N + tl.arange(0, BLOCK_N)
            if phase == 1:
                key_ok = key_pos >= 0  # all true: unmasked tiles lie inside [key_lo, key_hi)
            else:
                key_ok = (key_pos >= key_lo) & (key_pos < key_hi)
            # Logical block -> physical block. Table entries of keys we must not read are never loaded:
            # they may be garbage (freed blocks) or lie outside the table.
            column = key_pos // BLOCK_SIZE - block_table_start
            physical = tl.load(block_table_row_ptr + column, mask=key_ok, other=0).to(tl.int64)
            k_slot = physical * stride_kb + (key_pos % BLOCK_SIZE) * stride_ks + kv_head * stride_kh
            v_slot = physical * stride_vb + (key_pos % BLOCK_SIZE) * stride_vs + kv_head * stride_vh

            k_main = tl.load(
                k_cache_ptr + k_slot[None, :] + offs_d_main[:, None],
                mask=key_ok[None, :] & (offs_d_main[:, None] < HEAD_QK),
                other=0.0,
            )
            qk = tl.dot(q_main, k_main, input_precision=DOT_PRECISION)
            if HEAD_QK_TAIL > 0:
                k_tail = tl.load(
                    k_cache_ptr + k_slot[None, :] + offs_d_tail[:, None],
                    mask=key_ok[None, :] & (offs_d_tail[:, None] < HEAD_QK),
                    other=0.0,
                )
                qk += tl.dot(q_tail, k_tail, input_precision=DOT_PRECISION)
            qk = qk * qk_scale_log2
            if phase != 1:
                visible = key_ok[None, :] & (key_pos[None, :] <= q_pos[:, None])
                if WINDOW > 0:
                    visible = visible & (key_pos[None, :] > q_pos[:, None] - WINDOW)
                qk = tl.where(visible, qk, float("-inf"))

            m_new = tl.maximum(m_i, tl.max(qk, 1))
            # A row with nothing visible so far keeps m = -inf: subtract 0 instead, so no inf - inf = NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            # V rows of masked keys load as 0 (p is 0 there too): garbage, even NaN, never reaches acc.
            v = tl.load(
                v_cache_ptr + v_slot[:, None] + offs_dv[None, :],
                mask=key_ok[:, None] & (offs_dv[None, :] < HEAD_V),
                other=0.0,
            )
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
            m_i = m_new

    if COUNT_TILES:
        program = (tile_idx * tl.num_programs(1) + kv_head) * NUM_SPLITS + split
        tl.store(tile_counts_ptr + program, tl.maximum(split_hi - split_lo, 0))

    if NUM_SPLITS == 1:
        if HAS_SINKS:
            # The sink is one more softmax column with no value: it only grows the denominator.
            sink = tl.load(sinks_ptr + row_head, mask=row_ok, other=0.0) * 1.4426950408889634
            m_final = tl.maximum(m_i, sink)
            alpha = tl.math.exp2(m_i - m_final)
            acc = acc * (alpha / (l_i * alpha + tl.math.exp2(sink - m_final)))[:, None]
        else:
            acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        out_rows = out_ptr + token_index[:, None] * stride_ot + row_head[:, None] * stride_oh
        tl.store(
            out_rows + offs_dv[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & (offs_dv[None, :] < HEAD_V),
        )
    else:
        # partials: acc [num_tokens, num_q_heads, NUM_SPLITS, HEAD_V], max and sum [..., NUM_SPLITS, 2]
        row_split = (token_index * (tl.num_programs(1) * GROUP) + row_head) * NUM_SPLITS + split
        tl.store(
            partial_acc_ptr + row_split[:, None] * HEAD_V + offs_dv[None, :],
            acc,
            mask=row_ok[:, None] & (offs_dv[None, :] < HEAD_V),
        )
        tl.store(partial_max_sum_ptr + row_split * 2, m_i, mask=row_ok)
        tl.store(partial_max_sum_ptr + row_split * 2 + 1, l_i, mask=row_ok)


@triton.jit
def merge_splits_kernel(
    partial_acc_ptr,
    partial_max_sum_ptr,
    sinks_ptr,
    out_ptr,
    num_q_heads,
    stride_ot,
    stride_oh,
    HAS_SINKS: tl.constexpr,
    HEAD_V: tl.constexpr,
    HEAD_V_PAD: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    NUM_SPLITS_PAD: tl.constexpr,
):
    """Combine the split-KV partials of one (token, query head) into its output row."""
    token = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs_s = tl.arange(0, NUM_SPLITS_PAD)
    offs_dv = tl.arange(0, HEAD_V_PAD)
    split_ok = offs_s < NUM_SPLITS
    row_split = (token * num_q_heads + head) * NUM_SPLITS + offs_s
    m_s = tl.load(partial_max_sum_ptr + row_split * 2, mask=split_ok, other=float("-inf"))
    l_s = tl.load(partial_max_sum_ptr + row_split * 2 + 1, mask=split_ok, other=0.0)
    acc_s = tl.load(
        partial_acc_ptr + row_split[:, None] * HEAD_V + offs_dv[None, :],
        mask=split_ok[:, None] & (offs_dv[None, :] < HEAD_V),
        other=0.0,
    )
    m_final = tl.max(m_s, 0)
    if HAS_SINKS:
        sink = tl.load(sinks_ptr + head) * 1.4426950408889634
        m_final = tl.maximum(m_final, sink)
    m_final = tl.where(m_final == float("-inf"), 0.0, m_final)
    weight = tl.math.exp2(m_s - m_final)  # empty splits have m = -inf: weight 0
    denominator = tl.sum(l_s * weight, 0)
    if HAS_SINKS:
        denominator += tl.math.exp2(sink - m_final)
    denominator = tl.where(denominator == 0.0, 1.0, denominator)
    out = tl.sum(acc_s * weight[:, None], 0) / denominator
    tl.store(
        out_ptr + token * stride_ot + head * stride_oh + offs_dv,
        out.to(out_ptr.dtype.element_ty),
        mask=offs_dv < HEAD_V,
    )

"""Builders of paged-KV test cases: random sequences laid out in shuffled blocks, with poisoned garbage.

Every cache position that no query of its sequence may see, every freed block the table still points at
and every tail slot past a sequence's end holds ``poison`` (NaN by default), so a kernel or reference
that reads anything outside the windows produces NaN.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SeqSpec:
    seq_len: int  # context length including the new queries
    q_len: int  # new queries, at positions [seq_len - q_len, seq_len)


@dataclass
class PagedCase:
    q: torch.Tensor  # [num_tokens, num_q_heads, head_dim_qk]
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim_qk]
    v_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim_v]
    block_table: torch.Tensor  # int32 [num_seqs, max_blocks]
    block_table_start: torch.Tensor  # int32 [num_seqs]
    query_start_loc: torch.Tensor  # int32 [num_seqs + 1]
    seq_lens: torch.Tensor  # int32 [num_seqs]
    sinks: torch.Tensor | None  # float32 [num_q_heads]
    window: int
    scale: float
    dense_k: list[torch.Tensor]  # per sequence [seq_len, num_kv_heads, head_dim_qk], all positions
    dense_v: list[torch.Tensor]  # per sequence [seq_len, num_kv_heads, head_dim_v]

    def args(self) -> tuple:
        return (
            self.q,
            self.k_cache,
            self.v_cache,
            self.block_table,
            self.block_table_start,
            self.query_start_loc,
            self.seq_lens,
        )

    def kwargs(self) -> dict:
        return {"window": self.window, "sinks": self.sinks, "scale": self.scale}


def first_needed_pos(spec: SeqSpec, window: int) -> int:
    """The first key position any query of the sequence may see."""
    return max(0, spec.seq_len - spec.q_len - window + 1) if window > 0 else 0


def make_case(
    specs: list[SeqSpec],
    *,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim_qk: int,
    head_dim_v: int,
    block_size: int,
    window: int,
    with_sinks: bool,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    poison: float = float("nan"),
) -> PagedCase:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    num_tokens = sum(s.q_len for s in specs)
    q = torch.randn(num_tokens, num_q_heads, head_dim_qk, generator=gen).to(dtype)
    dense_k = [torch.randn(s.seq_len, num_kv_heads, head_dim_qk, generator=gen).to(dtype) for s in specs]
    dense_v = [torch.randn(s.seq_len, num_kv_heads, head_dim_v, generator=gen).to(dtype) for s in specs]

    # Logical blocks [table_start, last] of each sequence are in its table; those before the first
    # needed block are freed (they point at the poison block or at another sequence's live block).
    layouts = []
    for spec in specs:
        first_block = first_needed_pos(spec, window) // block_size
        last_block = (spec.seq_len - 1) // block_size
        table_start = max(0, first_block - rng.randint(0, 2)) if window > 0 else 0
        layouts.append((table_start, first_block, last_block))
    num_live = sum(last - first + 1 for _, first, last in layouts)
    physical = list(range(1, num_live + 1))  # block 0 is the poison block
    rng.shuffle(physical)
    num_blocks = num_live + 1 + rng.randint(0, 2)  # spare free blocks, poisoned as well
    max_blocks = max(last - start + 1 for start, _, last in layouts) + 2

    k_cache = torch.full((num_blocks, block_size, num_kv_heads, head_dim_qk), poison, dtype=dtype)
    v_cache = torch.full((num_blocks, block_size, num_kv_heads, head_dim_v), poison, dtype=dtype)
    block_table = torch.zeros(len(specs), max_blocks, dtype=torch.int32)
    live_blocks = []
    for seq, (spec, (table_start, first_block, last_block)) in enumerate(zip(specs, layouts, strict=True)):
        for logical in range(first_block, last_block + 1):
            block = physical.pop()
            live_blocks.append(block)
            block_table[seq, logical - table_start] = block
        for pos in range(first_needed_pos(spec, window), spec.seq_len):
            block = int(block_table[seq, pos // block_size - table_start])
            k_cache[block, pos % block_size] = dense_k[seq][pos]
            v_cache[block, pos % block_size] = dense_v[seq][pos]
    for seq, (table_start, first_block, last_block) in enumerate(layouts):
        garbage_columns = [
            *range(0, first_block - table_start),
            *range(last_block - table_start + 1, max_blocks),
        ]
        for column in garbage_columns:  # freed (or never allocated): poison, or reused by someone else
            block_table[seq, column] = rng.choice([0, rng.choice(live_blocks)])

    query_start_loc = torch.tensor(
        [0, *torch.tensor([s.q_len for s in specs]).cumsum(0).tolist()], dtype=torch.int32
    )
    sinks = torch.randn(num_q_heads, generator=gen) * 2 if with_sinks else None
    return PagedCase(
        q=q,
        k_cache=k_cache,
        v_cache=v_cache,
        block_table=block_table,
        block_table_start=torch.tensor([start for start, _, _ in layouts], dtype=torch.int32),
        query_start_loc=query_start_loc,
        seq_lens=torch.tensor([s.seq_len for s in specs], dtype=torch.int32),
        sinks=sinks,
        window=window,
        scale=head_dim_qk**-0.5,
        dense_k=dense_k,
        dense_v=dense_v,
    )


def dense_attention(case: PagedCase) -> torch.Tensor:  # float32 [num_tokens, num_q_heads, head_dim_v]
    """Brute force from the definition, shaped like transformers' MiMo-V2 eager attention.

    Unpaged K/V of every position, an additive mask built from the rule "query at p sees keys
    [max(0, p - window + 1), p]", the sink appended as a last logit column and dropped after softmax.
    """
    num_q_heads = case.q.shape[1]
    outputs = []
    starts = case.query_start_loc.tolist()
    for seq, seq_len in enumerate(case.seq_lens.tolist()):
        q = case.q[starts[seq] : starts[seq + 1]].float().transpose(0, 1)  # [H, q_len, D]
        q_len = q.shape[1]
        group = num_q_heads // case.dense_k[seq].shape[1]
        k = case.dense_k[seq].float().repeat_interleave(group, 1).transpose(0, 1)  # [H, seq_len, D]
        v = case.dense_v[seq].float().repeat_interleave(group, 1).transpose(0, 1)
        mask = torch.full((q_len, seq_len), float("-inf"))
        for row in range(q_len):
            p = seq_len - q_len + row
            lowest = max(0, p - case.window + 1) if case.window > 0 else 0
            mask[row, lowest : p + 1] = 0.0
        logits = q @ k.transpose(1, 2) * case.scale + mask
        if case.sinks is not None:
            logits = torch.cat([logits, case.sinks.reshape(-1, 1, 1).expand(-1, q_len, 1)], dim=-1)
        logits = logits - logits.max(dim=-1, keepdim=True).values
        probs = torch.softmax(logits, dim=-1)
        if case.sinks is not None:
            probs = probs[..., :-1]
        outputs.append((probs @ v).transpose(0, 1))
    return torch.cat(outputs)

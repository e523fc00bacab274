"""What one forward step tells the attention backend: packed queries and the paged KV they attend.

The model runner builds one ``AttentionMetadata`` per step; every layer of a kind (full or sliding)
reads the same ``PagedKV`` view, because all layers of a kind share block ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PagedKV:
    """Block tables of one KV pool for the sequences of a step.

    Column ``j`` of row ``i`` of ``block_table`` holds the physical block of logical block
    ``block_table_start[i] + j`` of sequence ``i``. Sliding-window pools free a sequence's old blocks,
    so their rows start at the first block still inside the window; full pools start at 0.
    """

    block_table: torch.Tensor  # int32 [num_seqs, max_blocks]
    block_table_start: torch.Tensor  # int32 [num_seqs]
    slot_mapping: torch.Tensor  # int64 [num_tokens]: physical_block * block_size + offset, for new K/V
    block_size: int
    # Backend-private derived tensors (gather plans), built at most once per step.
    cache: dict = field(default_factory=dict, repr=False)


@dataclass
class AttentionMetadata:
    """Packed variable-length queries of one step.

    Sequence ``i`` owns queries ``[query_start_loc[i], query_start_loc[i+1])``; they sit at positions
    ``seq_lens[i] - query_len_i ... seq_lens[i] - 1`` and attend keys up to ``seq_lens[i]`` (exclusive).
    """

    query_start_loc: torch.Tensor  # int32 [num_seqs + 1]
    seq_lens: torch.Tensor  # int32 [num_seqs]
    query_lens: list[int]
    context_lens: list[int]  # same as seq_lens, on the host
    full: PagedKV
    sliding: PagedKV

    def pool(self, is_sliding: bool) -> PagedKV:
        return self.sliding if is_sliding else self.full

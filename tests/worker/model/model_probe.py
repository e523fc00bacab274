"""Logits of our model for one whole prompt, straight through ``MiMoV2Model`` (no engine, no scheduler).

One sequence, one prefill step, KV blocks in order: enough to compare weights and layers against
transformers without depending on the engine's block management.
"""

from __future__ import annotations

import torch

from worker.model.attention_metadata import AttentionMetadata, PagedKV
from worker.model.attention_torch import TorchAttention

BLOCK_SIZE = 4


def prefill_logits(model, token_ids: list[int]) -> torch.Tensor:  # fp32 [len(token_ids), vocab]
    config, n = model.config, len(token_ids)
    num_blocks = -(-n // BLOCK_SIZE)
    kv_caches = [
        (
            torch.zeros(num_blocks, BLOCK_SIZE, config.num_kv_heads(i), config.head_dim, dtype=model.dtype),
            torch.zeros(num_blocks, BLOCK_SIZE, config.num_kv_heads(i), config.v_head_dim, dtype=model.dtype),
        )
        for i in range(config.num_layers)
    ]

    def pool() -> PagedKV:
        return PagedKV(
            block_table=torch.arange(num_blocks, dtype=torch.int32)[None, :],
            block_table_start=torch.zeros(1, dtype=torch.int32),
            slot_mapping=torch.arange(n, dtype=torch.int64),
            block_size=BLOCK_SIZE,
        )

    meta = AttentionMetadata(
        query_start_loc=torch.tensor([0, n], dtype=torch.int32),
        seq_lens=torch.tensor([n], dtype=torch.int32),
        query_lens=[n],
        context_lens=[n],
        full=pool(),
        sliding=pool(),
    )
    ids = torch.tensor(token_ids, dtype=torch.int64)
    with torch.no_grad():
        hidden = model(ids, torch.arange(n), kv_caches, meta, TorchAttention())
        return model.logits(hidden)

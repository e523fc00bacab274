"""Prompt embeddings: one forward pass per group of prompts, on scratch KV that nothing else sees.

The vector of a prompt is the mean, over every prompt token, of the model's final hidden states
(after the last RMSNorm: the states the LM head reads), L2-normalised; pooled in float32 whatever
the model's dtype. Causal attention means token ``i`` has seen only tokens ``[0, i]``, so the mean
mixes views of ever longer prefixes: the same definition as transformers'
``model.model(ids).last_hidden_state.mean(1)`` followed by normalisation.

No prefix cache is used: the KV of an embedding prompt is written to tensors made for the call and
dropped after it, so embeddings never evict or read cached generation KV (and every prompt token
is computed: all of it is cache-miss input). Prompts are packed into one forward pass while their
tokens fit ``max_tokens_per_pass``; a longer prompt runs alone in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from worker.model.attention_backend import AttentionBackend
from worker.model.attention_metadata import AttentionMetadata, PagedKV
from worker.model.mimo import MiMoV2Model


def _groups(prompt_lens: Sequence[int], max_tokens_per_pass: int) -> list[list[int]]:
    """Consecutive prompt indices whose lengths fit one pass (a longer prompt is its own group)."""
    groups: list[list[int]] = []
    tokens = 0
    for index, prompt_len in enumerate(prompt_lens):
        if groups and tokens + prompt_len <= max_tokens_per_pass:
            groups[-1].append(index)
            tokens += prompt_len
        else:
            groups.append([index])
            tokens = prompt_len
    return groups


@torch.inference_mode()
def embed_prompts(
    model: MiMoV2Model,
    backend: AttentionBackend,
    prompts: Sequence[Sequence[int]],
    *,
    block_size: int,
    max_tokens_per_pass: int,
) -> list[torch.Tensor]:
    """The unit-length embedding of each prompt: float32 ``[hidden_size]`` tensors, in order.

    Every prompt must be non-empty; raises ValueError otherwise.
    """
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("an embedding prompt must have at least one token")
    vectors: list[torch.Tensor] = []
    for group in _groups([len(p) for p in prompts], max_tokens_per_pass):
        vectors += _embed_group(model, backend, [prompts[i] for i in group], block_size)
    return vectors


def _embed_group(
    model: MiMoV2Model, backend: AttentionBackend, prompts: list[Sequence[int]], block_size: int
) -> list[torch.Tensor]:
    device = model.embed.device
    # Each prompt gets its own run of scratch blocks, the same ids in both pools: the sliding layers
    # keep every block of the pass (nothing is freed mid-pass), so their table starts at block 0.
    tables, slots, starts, lens = [], [], [0], []
    next_block = 0
    for prompt in prompts:
        num_blocks = -(-len(prompt) // block_size)
        blocks = list(range(next_block, next_block + num_blocks))
        next_block += num_blocks
        tables.append(blocks)
        slots += [blocks[p // block_size] * block_size + p % block_size for p in range(len(prompt))]
        starts.append(starts[-1] + len(prompt))
        lens.append(len(prompt))
    width = max(len(t) for t in tables)
    paged = PagedKV(
        block_table=torch.tensor(
            [t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=device
        ),
        block_table_start=torch.zeros(len(prompts), dtype=torch.int32, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        block_size=block_size,
    )
    # Two views of one PagedKV would share its backend plan cache; full and sliding plans differ by
    # window in their cache key, so sharing is safe, but separate objects keep the contract plain.
    meta = AttentionMetadata(
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(lens, dtype=torch.int32, device=device),
        query_lens=lens,
        context_lens=lens,
        full=paged,
        sliding=PagedKV(paged.block_table, paged.block_table_start, paged.slot_mapping, block_size),
    )
    config = model.kv_config  # this rank's KV heads (all of them on one rank)
    kv_caches = []
    for layer in range(config.num_layers):
        shape = (next_block, block_size, config.num_kv_heads(layer))
        kv_caches.append(
            (
                torch.empty(*shape, config.head_dim, dtype=model.dtype, device=device),
                torch.empty(*shape, config.v_head_dim, dtype=model.dtype, device=device),
            )
        )
    input_ids = torch.tensor([t for p in prompts for t in p], dtype=torch.long, device=device)
    positions = torch.cat([torch.arange(n, device=device) for n in lens])
    hidden = model(input_ids, positions, kv_caches, meta, backend).float()  # [num_tokens, hidden]
    return [
        F.normalize(hidden[lo:hi].mean(dim=0), dim=0).cpu()
        for lo, hi in zip(starts[:-1], starts[1:], strict=True)
    ]

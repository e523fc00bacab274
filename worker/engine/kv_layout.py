"""How many KV blocks of each pool fit a memory budget, and the tensors that hold them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from worker.model.config import ModelConfig

GIB = 1024**3


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KVCacheLayout:
    block_size: int
    num_full_blocks: int
    num_swa_blocks: int
    full_block_bytes: int  # one block across every full-attention layer, K and V
    swa_block_bytes: int  # one block across every sliding-window layer, K and V


def block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype, sliding: bool) -> int:
    layers = config.swa_layers if sliding else config.full_layers
    element = torch.empty(0, dtype=dtype).element_size()
    per_layer = lambda i: config.num_kv_heads(i) * (config.head_dim + config.v_head_dim)  # noqa: E731
    return block_size * element * sum(per_layer(i) for i in layers)


def plan_layout(
    config: ModelConfig,
    dtype: torch.dtype,
    *,
    block_size: int,
    kv_cache_bytes: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    num_full_blocks: int | None = None,
    num_swa_blocks: int | None = None,
) -> KVCacheLayout:
    """Splits the budget: the SWA pool gets what ``max_num_seqs`` windows plus one chunk need
    (at most half the budget when the model also has full layers), the full pool the rest."""
    full_bytes = block_bytes(config, block_size, dtype, sliding=False)
    swa_bytes = block_bytes(config, block_size, dtype, sliding=True)
    window = config.sliding_window if config.swa_layers else 0
    if num_swa_blocks is None:
        if not swa_bytes:
            num_swa_blocks = 0
        else:
            per_seq = _ceil_div(window, block_size) + 2
            target = max_num_seqs * per_seq + _ceil_div(max_num_batched_tokens, block_size)
            share = kv_cache_bytes // 2 if full_bytes else kv_cache_bytes
            num_swa_blocks = min(target, share // swa_bytes)
    if num_full_blocks is None:
        num_full_blocks = (kv_cache_bytes - num_swa_blocks * swa_bytes) // full_bytes if full_bytes else 0
    if full_bytes and num_full_blocks <= 0:
        raise ValueError(f"a KV cache budget of {kv_cache_bytes} bytes leaves no full-attention block")
    if swa_bytes and num_swa_blocks <= 0:
        raise ValueError(f"a KV cache budget of {kv_cache_bytes} bytes leaves no sliding-window block")
    return KVCacheLayout(block_size, int(num_full_blocks), int(num_swa_blocks), full_bytes, swa_bytes)


def allocate_kv_tensors(
    config: ModelConfig, layout: KVCacheLayout, dtype: torch.dtype, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (k_cache, v_cache): [num_blocks, block_size, num_kv_heads, head_dim] of its pool."""
    caches = []
    for i in range(config.num_layers):
        num_blocks = layout.num_swa_blocks if config.is_sliding(i) else layout.num_full_blocks
        shape = (num_blocks, layout.block_size, config.num_kv_heads(i))
        caches.append(
            (
                torch.zeros(*shape, config.head_dim, dtype=dtype, device=device),
                torch.zeros(*shape, config.v_head_dim, dtype=dtype, device=device),
            )
        )
    return caches

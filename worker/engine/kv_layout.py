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


# The SWA pool's share of a KV budget's bytes, unless the caller chooses one. A cached prefix needs
# both pools: full-layer KV for every token, SWA KV for each window it keeps. Measured with
# `hybatch bench cache-trace` on the MiMo-V2.5-Pro shape (docs/kv-cache.md, "The pool split"): half
# is the best share for documents and conversations at every budget from 8 to 80 GB; the mix does
# best at 0.6 (up to 9 points more), which costs the others up to 14.
# Sizing the SWA pool for the running sequences alone (what this did before) left 11 GB of 80 for
# windows: the mix trace hit 39.3% of its prompt tokens there, against 65.1% at half.
DEFAULT_SWA_SHARE = 0.5


def plan_layout(
    config: ModelConfig,
    dtype: torch.dtype,
    *,
    block_size: int,
    kv_cache_bytes: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    swa_share: float = DEFAULT_SWA_SHARE,
    num_full_blocks: int | None = None,
    num_swa_blocks: int | None = None,
) -> KVCacheLayout:
    """Splits ``kv_cache_bytes`` between the pools by bytes: the SWA pool gets ``swa_share`` of it,
    and at least what ``max_num_seqs`` windows plus one chunk need (up to half the budget) so the
    running sequences fit; the full pool gets the rest. A model with one kind of layer gives it all
    to that pool. ``num_full_blocks`` / ``num_swa_blocks`` override either count."""
    full_bytes = block_bytes(config, block_size, dtype, sliding=False)
    swa_bytes = block_bytes(config, block_size, dtype, sliding=True)
    window = config.sliding_window if config.swa_layers else 0
    if num_swa_blocks is None:
        if not swa_bytes:
            num_swa_blocks = 0
        elif not full_bytes:
            num_swa_blocks = kv_cache_bytes // swa_bytes
        else:
            if not 0 < swa_share < 1:
                raise ValueError(f"swa_share must lie strictly between 0 and 1, not {swa_share}")
            per_seq = _ceil_div(window, block_size) + 2
            running = max_num_seqs * per_seq + _ceil_div(max_num_batched_tokens, block_size)
            floor = min(running, kv_cache_bytes // 2 // swa_bytes)
            num_swa_blocks = max(floor, int(kv_cache_bytes * swa_share) // swa_bytes)
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

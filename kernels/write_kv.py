"""Writing a step's new keys and values into their paged cache slots."""

from __future__ import annotations

import torch


def write_kv(
    k: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_qk]
    v: torch.Tensor,  # [num_tokens, num_kv_heads, head_dim_v]
    k_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_qk]
    v_cache: torch.Tensor,  # [num_blocks, block_size, num_kv_heads, head_dim_v]
    slot_mapping: torch.Tensor,  # int64 [num_tokens]: physical_block * block_size + offset_in_block
) -> None:
    """Store token ``t``'s K/V at ``slot_mapping[t]`` of both caches, in place (cast to the cache dtype).

    Slots must be distinct; a negative slot skips its token (padding rows of a captured batch).
    """
    from kernels.write_kv_kernel import launch_write_kv

    launch_write_kv(k, v, k_cache, v_cache, slot_mapping)

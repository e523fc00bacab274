"""What the KV cache needs of a sequence: its tokens and the block lists the cache manager keeps.

The engine's ``Sequence`` has these attributes; the cache names them through this protocol so that
``worker.kv_cache`` never imports the engine. Only ``KVCacheManager`` writes the block lists,
``num_computed_tokens``, ``num_cached_tokens`` and ``block_hashes`` (and adds divergence points
to ``retain_at``); everything else reads them.
"""

from __future__ import annotations

from typing import Protocol


class KVSequence(Protocol):
    token_ids: list[int]  # prompt + generated
    cache_salt: str | None
    num_computed_tokens: int
    num_cached_tokens: int  # prompt tokens of the first admission's hit (what billing counts)
    num_preemptions: int
    # Full-attention pool: logical block i at full_blocks[i].
    full_blocks: list[int]
    # Sliding-window pool: logical block (swa_first_block + j) at swa_blocks[j]; older ones were freed.
    swa_blocks: list[int]
    swa_first_block: int
    block_hashes: list[bytes]  # chained hashes of the completed full blocks of token_ids
    retain_at: frozenset[int]  # block-aligned token positions where a window is planned
    message_boundaries: frozenset[int]  # block-aligned ends of chat messages (windows kept there)

    @property
    def prompt_len(self) -> int: ...

    @property
    def num_tokens(self) -> int: ...

    @property
    def num_uncomputed_tokens(self) -> int: ...

"""The two KV block pools (full-attention and sliding-window) and the window arithmetic over them.

Full-attention layers keep every token: logical block i covers tokens [i*B, (i+1)*B).
Sliding-window layers only ever read the last W keys, so a sequence keeps just the blocks that can
still be read:

    computing tokens [start, end) reads keys from  first_key = max(0, start - W + 1)
    [0, first_key // B) of the SWA blocks are dead; [first_key // B, (end-1) // B] must be resident

so a running sequence holds at most ceil(W/B) + 1 SWA blocks plus the blocks of its current chunk.

This module only reads sequences; ``KVCacheManager`` (``kv_cache_manager.py``) is the one that gives
them blocks and takes them back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.kv_cache.block_hash import chain_hash
from worker.kv_cache.block_pool import BlockPool
from worker.kv_cache.kv_sequence import KVSequence


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class BlockDemand:
    full: int
    swa: int


class BlockManager:
    def __init__(self, block_size: int, num_full_blocks: int, num_swa_blocks: int, window: int):
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.window = window  # 0 when the model has no sliding-window layers
        self.full = BlockPool("full", num_full_blocks)
        self.swa = BlockPool("swa", num_swa_blocks)

    # -- window arithmetic ---------------------------------------------------------------------
    def first_live_swa_block(self, next_token: int) -> int:
        """First SWA block a computation starting at token ``next_token`` can read."""
        if not self.window:
            return 0
        return max(0, next_token - self.window + 1) // self.block_size

    def max_swa_blocks_per_seq(self, chunk_tokens: int) -> int:
        if not self.window:
            return 0
        return _ceil_div(self.window, self.block_size) + 1 + _ceil_div(chunk_tokens, self.block_size)

    # -- allocation ----------------------------------------------------------------------------
    def demand(self, seq: KVSequence, num_new_tokens: int) -> BlockDemand:
        """Blocks ``seq`` lacks for tokens up to ``num_computed + num_new_tokens`` (before it frees the
        SWA blocks that go dead first)."""
        end = seq.num_computed_tokens + num_new_tokens
        blocks_needed = _ceil_div(end, self.block_size)
        full = max(0, blocks_needed - len(seq.full_blocks))
        if not self.window:
            return BlockDemand(full, 0)
        first_live = max(self.first_live_swa_block(seq.num_computed_tokens), seq.swa_first_block)
        held_live = max(0, seq.swa_first_block + len(seq.swa_blocks) - first_live)
        swa = max(0, blocks_needed - first_live - held_live)
        # Blocks that go dead before this step are returned first, so they count as available.
        return BlockDemand(full, swa)

    def dead_swa_blocks(self, seq: KVSequence, next_token: int) -> int:
        """How many of ``seq``'s leading SWA blocks no computation from ``next_token`` on can read."""
        first_live = self.first_live_swa_block(next_token)
        return max(0, min(first_live - seq.swa_first_block, len(seq.swa_blocks)))

    def hashes_for(self, seq: KVSequence, num_blocks: int) -> list[bytes]:
        """Chained hashes of the first ``num_blocks`` full blocks of ``seq``'s tokens."""
        hashes = list(seq.block_hashes[:num_blocks])
        while len(hashes) < num_blocks:
            i = len(hashes)
            tokens = seq.token_ids[i * self.block_size : (i + 1) * self.block_size]
            hashes.append(chain_hash(hashes[-1] if hashes else None, tokens, seq.cache_salt))
        return hashes

    def check_integrity(
        self, running: Sequence[KVSequence] = (), cached: tuple[dict, dict] | None = None
    ) -> None:
        """Every block's ref count equals the references running sequences (and the cache) hold."""
        self.full.check_integrity()
        self.swa.check_integrity()
        if cached is None and not running:
            return
        for pool, lists, extra in (
            (self.full, [s.full_blocks for s in running], cached[0] if cached else {}),
            (self.swa, [s.swa_blocks for s in running], cached[1] if cached else {}),
        ):
            expected = dict(extra)
            for blocks in lists:
                for block in blocks:
                    expected[block] = expected.get(block, 0) + 1
            for block, refs in enumerate(pool.ref_counts):
                if refs != expected.get(block, 0):
                    raise AssertionError(
                        f"{pool.name} block {block}: ref count {refs}, held {expected.get(block, 0)} times"
                    )

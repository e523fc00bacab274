"""The block hashes the prefix cache dropped lately: so a short hit can say it was cut by eviction.

A prompt whose match stops where the tree has nothing more may simply be new there, or may follow
a path the cache held and had to drop. Remembering the hashes of dropped entries (a bounded,
least-recently-dropped-first set: 16 bytes each) tells the two apart, for the metrics only; it
changes no decision.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class EvictedHashes:
    def __init__(self, capacity: int = 1 << 16):
        self.capacity = capacity
        self._hashes: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def dropped(self, block_hash: bytes) -> None:
        """``block_hash``'s entry left the cache (every tier)."""
        self._hashes[block_hash] = None
        self._hashes.move_to_end(block_hash)
        if len(self._hashes) > self.capacity:
            self._hashes.popitem(last=False)

    def cached(self, block_hash: bytes) -> None:
        """``block_hash``'s entry is in the cache again."""
        self._hashes.pop(block_hash, None)

    def run_length(self, block_hashes: Iterable[bytes]) -> int:
        """How many of ``block_hashes``, from the first, were dropped."""
        count = 0
        for block_hash in block_hashes:
            if block_hash not in self._hashes:
                break
            count += 1
        return count

"""Ids, reference counts and content hashes of one pool of KV blocks. Never touches a tensor."""

from __future__ import annotations

from collections import deque


class BlockPool:
    def __init__(self, name: str, num_blocks: int):
        self.name = name
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self.ref_counts = [0] * num_blocks
        self.hashes: dict[int, bytes] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self) -> int:
        """Takes a free block (ref count 1). Callers check ``num_free`` first."""
        if not self._free:
            raise RuntimeError(f"{self.name} pool has no free block")
        block = self._free.popleft()
        self.ref_counts[block] = 1
        return block

    def retain(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"{self.name} block {block} is not allocated")
        self.ref_counts[block] += 1

    def release(self, block: int) -> None:
        """Drops one reference; the block returns to the free list at zero."""
        if self.ref_counts[block] <= 0:
            raise RuntimeError(f"{self.name} block {block} released more often than allocated")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.hashes.pop(block, None)
            self._free.append(block)

    def set_hash(self, block: int, block_hash: bytes) -> None:
        self.hashes[block] = block_hash

    def check_integrity(self) -> None:
        free = set(self._free)
        if len(free) != len(self._free):
            raise AssertionError(f"{self.name}: a block is on the free list twice")
        for block, refs in enumerate(self.ref_counts):
            if refs < 0:
                raise AssertionError(f"{self.name}: block {block} has ref count {refs}")
            if (refs == 0) != (block in free):
                raise AssertionError(
                    f"{self.name}: block {block} has ref count {refs} but free={block in free}"
                )
        stale = [b for b in self.hashes if self.ref_counts[b] == 0]
        if stale:
            raise AssertionError(f"{self.name}: free blocks {stale[:5]} still carry hashes")

"""A block-granular radix tree with LRU orders, for the radix-cache peers of ``bench cache-trace``.

One node per block of ``block_size`` tokens, under one root per cache salt. A node always holds its
full-layer KV; ``has_swa`` says whether it also still holds its SWA-layer KV (SGLang's tombstone is
``has_swa = False``). Locks count the running requests that read a node. The two LRU orders are
heaps with lazy deletion: an entry is live while its node is alive and still carries the access
stamp it was pushed with, so touching a node pushes it again instead of moving it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(eq=False)
class RadixNode:
    tokens: tuple[int, ...]
    parent: RadixNode | None  # None for a salt's root, which holds no KV
    children: dict[tuple[int, ...], RadixNode] = field(default_factory=dict)
    has_swa: bool = True
    full_locks: int = 0
    swa_locks: int = 0
    last_access: int = 0
    alive: bool = True

    @property
    def is_leaf(self) -> bool:
        return not self.children


class BlockRadixTree:
    def __init__(self):
        self.roots: dict[str, RadixNode] = {}
        self.num_nodes = 0
        self.num_swa = 0  # nodes that hold SWA KV
        self._clock = itertools.count(1)
        self._order = itertools.count()
        self._leaves: list[tuple[int, int, RadixNode]] = []  # full-KV eviction order
        self._swa: list[tuple[int, int, RadixNode]] = []  # SWA eviction order

    def root(self, salt: str) -> RadixNode:
        return self.roots.setdefault(salt, RadixNode((), None))

    def walk(self, salt: str, blocks: list[tuple[int, ...]]) -> list[RadixNode]:
        """Nodes along the longest cached prefix of ``blocks``."""
        path: list[RadixNode] = []
        node = self.root(salt)
        for tokens in blocks:
            node = node.children.get(tokens)
            if node is None:
                break
            path.append(node)
        return path

    def insert(self, parent: RadixNode, tokens: tuple[int, ...], has_swa: bool) -> RadixNode:
        node = RadixNode(tokens, parent, has_swa=has_swa)
        parent.children[tokens] = node
        self.num_nodes += 1
        self.num_swa += has_swa
        self.touch(node)
        return node

    def touch(self, node: RadixNode) -> None:
        """A fresh access stamp: ``node`` becomes the most recently used in both orders."""
        node.last_access = next(self._clock)
        self.offer(node)

    def offer(self, node: RadixNode) -> None:
        """(Re)enters ``node`` into the orders it may now be evicted from (after an unlock, or when
        it became a leaf)."""
        if node.parent is None:
            return
        entry = (node.last_access, next(self._order), node)
        if node.is_leaf:
            heapq.heappush(self._leaves, entry)
        if node.has_swa:
            heapq.heappush(self._swa, entry)

    def tombstone(self, node: RadixNode) -> None:
        node.has_swa = False
        self.num_swa -= 1

    def revive(self, node: RadixNode) -> None:
        node.has_swa = True
        self.num_swa += 1
        self.offer(node)

    def remove_leaf(self, node: RadixNode) -> None:
        del node.parent.children[node.tokens]
        node.alive = False
        self.num_nodes -= 1
        self.num_swa -= node.has_swa
        if node.parent.is_leaf:
            self.offer(node.parent)

    def least_recent_leaves(self) -> Iterator[RadixNode]:
        """Unlocked leaves, least recently used first (each node at most once per push)."""
        return self._pop(self._leaves, lambda n: n.is_leaf and n.full_locks == 0)

    def least_recent_swa(self) -> Iterator[RadixNode]:
        """Nodes holding SWA KV no running request reads, least recently used first."""
        return self._pop(self._swa, lambda n: n.has_swa and n.swa_locks == 0)

    @staticmethod
    def _pop(heap: list, eligible) -> Iterator[RadixNode]:
        while heap:
            stamp, _, node = heapq.heappop(heap)
            if node.alive and node.last_access == stamp and eligible(node):
                yield node

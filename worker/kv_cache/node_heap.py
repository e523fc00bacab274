"""Cache entries ordered by ``(last_access, tie_break(node))``, least recent first, kept up to date
instead of re-scanned: each change costs O(log n).

Lazy deletion: a node has at most one *live* heap entry; re-keying or removing a node leaves its old
entry in the heap, skipped when popped and compacted away once stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator

from worker.kv_cache.radix import Node

# (last_access, tie break, push number, node): the push number only orders two entries of one node.
_Entry = tuple[int, int, int, Node]


class NodeHeap:
    def __init__(self, tie_break: Callable[[Node], int]) -> None:
        self._tie_break = tie_break
        self._heap: list[_Entry] = []
        self._live: dict[Node, _Entry] = {}  # every member -> its one live heap entry
        self._pushes = itertools.count()
        self._popping = False

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, node: Node) -> bool:
        return node in self._live

    def members(self) -> set[Node]:
        return set(self._live)

    def push(self, node: Node) -> None:
        """Adds ``node``, or moves it to the place its current ``last_access`` gives it."""
        entry = (node.last_access, self._tie_break(node), next(self._pushes), node)
        self._live[node] = entry
        heapq.heappush(self._heap, entry)
        self._compact()

    def discard(self, node: Node) -> None:
        self._live.pop(node, None)

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a member moves to its new place in the order."""
        entry = self._live.get(node)
        if entry is not None and entry[0] != node.last_access:
            self.push(node)

    def least_recent(self) -> Iterator[Node]:
        """Members, least recent first. Take each with ``next`` after acting on the one before (a
        member added meanwhile is considered in its turn); close the iterator when done. Members
        yielded but still members when it closes stay queued."""
        taken: list[_Entry] = []
        self._popping = True
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                if self._live.get(entry[3]) is not entry:
                    continue  # stale: touched since, or no longer a member
                taken.append(entry)
                yield entry[3]
        finally:
            self._popping = False
            for entry in taken:
                if self._live.get(entry[3]) is entry:
                    heapq.heappush(self._heap, entry)
            self._compact()

    def _compact(self) -> None:
        # Not while popping: entries taken out then go back into the heap when iteration ends.
        if not self._popping and len(self._heap) > 2 * len(self._live) + 64:
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def check_integrity(self, expected: Iterable[Node], what: str) -> None:
        """The members are exactly ``expected``, each under its current key, each in the heap."""
        expected = set(expected)
        if set(self._live) != expected:
            raise AssertionError(f"{what} holds {len(self._live)} entries, the tree has {len(expected)}")
        in_heap = {id(entry) for entry in self._heap}
        for node, entry in self._live.items():
            if entry[:2] != (node.last_access, self._tie_break(node)) or entry[3] is not node:
                raise AssertionError(f"{what} has a stale key for the entry at depth {node.depth}")
            if id(entry) not in in_heap:
                raise AssertionError(f"{what} lost the heap entry at depth {node.depth}")

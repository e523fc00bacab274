"""Which device entry of the prefix cache to evict next, kept up to date instead of re-scanned.

The cache evicts from the bottom of its device tree: a device node is a *candidate* when none of its
children is on the device. Candidates wait in a heap keyed ``(last_access, id(node))``: least
recently used first, ties broken by ``id`` (the order a full scan of the tree gives). A candidate
that a running sequence also references is skipped and stays queued. The cache reports every
change, each O(log n), so a reclaim costs O(log n) per evicted entry rather than a scan of the tree:

    entered_device(node)  inserted on the device, or promoted back to it
    left_device(node)     demoted to a lower tier, or dropped while on the device
    touched(node)         its ``last_access`` changed

Stale heap entries (a candidate touched again since, or no longer a candidate) are skipped when
popped and compacted away once they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator

from worker.kv_cache.radix import Node, Tier

# (last_access, id(node), push number, node): the push number only orders two entries of one node.
_Entry = tuple[int, int, int, Node]


class EvictionQueue:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[Node, _Entry] = {}  # every candidate -> its one live heap entry
        self._device_children: dict[Node, int] = {}  # device node -> device children, when any
        self._pushes = itertools.count()
        self._popping = False

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, node: Node) -> bool:
        return node in self._live

    def entered_device(self, node: Node) -> None:
        """``node`` is now on the device, with no device children (just inserted or promoted)."""
        parent = node.parent
        if parent is not None:
            self._device_children[parent] = self._device_children.get(parent, 0) + 1
            self._live.pop(parent, None)
        self._push(node)

    def left_device(self, node: Node) -> None:
        """``node`` (no device children) left the device; its parent may have become a candidate."""
        self._live.pop(node, None)
        parent = node.parent
        if parent is None:
            return
        remaining = self._device_children[parent] - 1
        if remaining:
            self._device_children[parent] = remaining
        else:
            del self._device_children[parent]
            self._push(parent)

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a candidate moves to its new place in the order."""
        entry = self._live.get(node)
        if entry is not None and entry[0] != node.last_access:
            self._push(node)

    def least_recent(self, is_free: Callable[[Node], bool]) -> Iterator[Node]:
        """Candidates that ``is_free`` accepts, least recently used first.

        Take each with ``next`` after the one before has left the device (``left_device``), so that
        a parent it turned into a candidate is considered in its turn; close the iterator when done.
        Candidates ``is_free`` rejects, and any yielded one that did not leave, stay queued.
        """
        taken: list[_Entry] = []
        self._popping = True
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                node = entry[3]
                if self._live.get(node) is not entry:
                    continue  # stale: touched since, or no longer a candidate
                taken.append(entry)
                if is_free(node):
                    yield node
        finally:
            self._popping = False
            for entry in taken:
                if self._live.get(entry[3]) is entry:
                    heapq.heappush(self._heap, entry)
            self._compact()

    def _push(self, node: Node) -> None:
        entry = (node.last_access, id(node), next(self._pushes), node)
        self._live[node] = entry
        heapq.heappush(self._heap, entry)
        self._compact()

    def _compact(self) -> None:
        # Not while popping: entries taken out then go back into the heap when iteration ends.
        if not self._popping and len(self._heap) > 2 * len(self._live) + 64:
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def check_integrity(self, nodes: Iterable[Node]) -> None:
        """The queue agrees with a full scan of ``nodes`` (the whole tree): same candidates, same keys."""
        candidates: set[Node] = set()
        device_children: dict[Node, int] = {}
        for node in nodes:
            if node.tier is not Tier.DEVICE:
                continue
            count = sum(1 for child in node.children.values() if child.tier is Tier.DEVICE)
            if count:
                device_children[node] = count
            else:
                candidates.add(node)
        if set(self._live) != candidates:
            raise AssertionError(
                f"eviction queue holds {len(self._live)} candidates, the tree has {len(candidates)}"
            )
        if self._device_children != device_children:
            raise AssertionError("eviction queue miscounts device children")
        in_heap = {id(entry) for entry in self._heap}
        for node, entry in self._live.items():
            if entry[0] != node.last_access or entry[1] != id(node) or entry[3] is not node:
                raise AssertionError(f"eviction queue has a stale key for the node at depth {node.depth}")
            if id(entry) not in in_heap:
                raise AssertionError(f"eviction queue lost the heap entry of the node at depth {node.depth}")

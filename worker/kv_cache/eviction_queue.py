"""Which device entry of the prefix cache to evict next, kept up to date instead of re-scanned.

The cache evicts from the bottom of its device tree: a device node is a *candidate* when none of its
children is on the device. Candidates wait in a heap keyed ``(last_access, id(node))``: least
recently used first, ties broken by ``id`` (the order a full scan of the tree gives). A candidate
that a running sequence also references is skipped and stays queued. The cache reports every
change, each O(log n), so a reclaim costs O(log n) per evicted entry rather than a scan of the tree:

    entered_device(node)  inserted on the device, or promoted back to it
    left_device(node)     demoted to a lower tier, or dropped while on the device
    touched(node)         its ``last_access`` changed

The heap is a ``NodeHeap`` (lazy deletion: stale entries are skipped when popped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from worker.kv_cache.node_heap import NodeHeap
from worker.kv_cache.radix import Node, Tier


class EvictionQueue:
    def __init__(self) -> None:
        self._candidates = NodeHeap(tie_break=id)
        self._device_children: dict[Node, int] = {}  # device node -> device children, when any

    def __len__(self) -> int:
        return len(self._candidates)

    def __contains__(self, node: Node) -> bool:
        return node in self._candidates

    def entered_device(self, node: Node) -> None:
        """``node`` is now on the device, with no device children (just inserted or promoted)."""
        parent = node.parent
        if parent is not None:
            self._device_children[parent] = self._device_children.get(parent, 0) + 1
            self._candidates.discard(parent)
        self._candidates.push(node)

    def left_device(self, node: Node) -> None:
        """``node`` (no device children) left the device; its parent may have become a candidate."""
        self._candidates.discard(node)
        parent = node.parent
        if parent is None:
            return
        remaining = self._device_children[parent] - 1
        if remaining:
            self._device_children[parent] = remaining
        else:
            del self._device_children[parent]
            self._candidates.push(parent)

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a candidate moves to its new place in the order."""
        self._candidates.touched(node)

    def least_recent(self, is_free: Callable[[Node], bool]) -> Iterator[Node]:
        """Candidates that ``is_free`` accepts, least recently used first.

        Take each with ``next`` after the one before has left the device (``left_device``), so that
        a parent it turned into a candidate is considered in its turn; close the iterator when done.
        Candidates ``is_free`` rejects, and any yielded one that did not leave, stay queued.
        """
        candidates = self._candidates.least_recent()
        try:
            yield from (node for node in candidates if is_free(node))
        finally:
            candidates.close()

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
        self._candidates.check_integrity(candidates, "eviction queue")
        if self._device_children != device_children:
            raise AssertionError("eviction queue miscounts device children")

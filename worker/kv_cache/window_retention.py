"""Which prefix-cache entries keep a sliding-window window, and which windows go first under pressure.

An entry's window component is the SWA blocks a computation resuming at the entry's end reads (the
last ``W - 1`` tokens, page-aligned). Windows are retained only where a batch will resume: at the end
of every prompt (its last full block), at the branch points the planner found (``retain_at``)
and every ``retain_every_tokens`` tokens if set; nowhere else. When the SWA pool runs short, retained
windows are dropped least recently used first; the entry keeps its full component, so a later hit
resumes at the deepest window above it (counted as cut short).

The drop order is kept up to date instead of re-scanned: the window holders wait in a heap keyed
``(last_access, depth)``, which the cache updates as windows are retained, attached, released and
their entries hit (``touched``), so dropping a window costs O(log n). The depth breaks ties exactly
as the former scan did (a sort of the tree's pre-order traversal by ``last_access``, ties in
traversal order): an access stamp goes to one new entry or to the entries of one hit path, so
entries that share one lie on a single root path, where the traversal meets the shallower first.
The heap is a ``NodeHeap`` (lazy deletion: stale entries are skipped when popped).

Holds block ids, never tensors; the cache holds one SWA-pool reference on every block of a window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_sequence import KVSequence
from worker.kv_cache.node_heap import NodeHeap
from worker.kv_cache.radix import Node, Tier


class WindowRetention:
    def __init__(self, blocks: BlockManager, retain_every_tokens: int | None = None):
        self.blocks = blocks
        self.retain_every_tokens = retain_every_tokens
        self.needs_window = blocks.window > 0
        self._holders = NodeHeap(tie_break=lambda node: node.depth)  # the entries holding a window

    def retain_passed(self, seq: KVSequence, previous_computed: int, path: list[Node]) -> int:
        """Retains the windows ``seq`` passed since ``previous_computed`` at the retention points on
        ``path`` (its nodes from the root); returns how many. Call before ``seq``'s dead SWA blocks are
        released: the window's blocks are taken from the sequence, one more reference each."""
        size = self.blocks.block_size
        retained = 0
        for end_token in self._retention_points(seq, previous_computed):
            depth = end_token // size - 1
            if depth < len(path) and path[depth].tier is Tier.DEVICE:
                retained += self._retain(seq, path[depth])
        return retained

    def _retention_points(self, seq: KVSequence, previous_computed: int) -> list[int]:
        size = self.blocks.block_size
        lo, hi = previous_computed, seq.num_computed_tokens
        points = {p for p in seq.retain_at if lo < p <= hi}
        prompt_end = seq.prompt_len // size * size
        if lo < prompt_end <= hi:
            points.add(prompt_end)
        if self.retain_every_tokens:
            step = max(size, self.retain_every_tokens // size * size)
            points.update(range((lo // step + 1) * step, hi + 1, step))
        return sorted(p for p in points if p > 0 and p % size == 0)

    def _retain(self, seq: KVSequence, node: Node) -> bool:
        if node.window is not None or not self.needs_window:
            return False
        first = self.blocks.first_live_swa_block(node.end_token)
        if first < seq.swa_first_block:
            return False  # the sequence no longer holds that window (cannot happen when called in time)
        window = tuple(seq.swa_blocks[first - seq.swa_first_block : node.depth + 1 - seq.swa_first_block])
        for block in window:
            self.blocks.swa.retain(block)
        node.window = window
        node.window_len = len(window)
        node.window_dropped = False
        self._holders.push(node)
        return True

    def attach(self, node: Node, window: tuple[int, ...]) -> None:
        """Gives ``node`` (just promoted to the device) the SWA blocks its window was loaded into,
        already allocated for the cache; an empty ``window`` leaves it without one."""
        node.window = window or None
        node.window_len = len(window)
        if window:
            self._holders.push(node)

    def release(self, node: Node, keep_length: bool = False) -> None:
        """Returns ``node``'s window blocks to the SWA pool. ``keep_length`` keeps ``window_len``:
        the window moves down a tier with its entry instead of being dropped."""
        for block in node.window or ():
            self.blocks.swa.release(block)
        node.window = None
        if not keep_length:
            node.window_len = 0
        self._holders.discard(node)

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a window holder moves to its new place in the drop order."""
        self._holders.touched(node)

    def drop_least_recent(self, swa_needed: int) -> int:
        """Drops retained windows, least recently used first, until ``swa_needed`` SWA blocks are free
        or none is left; returns how many were dropped. A window a running sequence shares frees no
        block, but is dropped all the same."""
        dropped = 0
        holders = self._holders.least_recent()
        try:
            for node in holders:
                if self.blocks.swa.num_free >= swa_needed:
                    break
                self._drop(node)
                dropped += 1
        finally:
            holders.close()
        return dropped

    def _drop(self, node: Node) -> None:
        self.release(node)
        node.window_dropped = True

    def check_integrity(self, nodes: Iterable[Node]) -> None:
        """The drop order agrees with a full scan of ``nodes`` (the whole tree): the same holders, the
        same keys, and holders that share an access stamp on one root path (so depth orders them as
        the tree's traversal does)."""
        holders = [node for node in nodes if node.window]
        self._holders.check_integrity(holders, "drop order")
        by_stamp: dict[int, list[Node]] = {}
        for node in holders:
            by_stamp.setdefault(node.last_access, []).append(node)
        for same in by_stamp.values():
            same.sort(key=lambda n: n.depth)
            for upper, lower in itertools.pairwise(same):
                ancestor = lower
                while ancestor is not None and ancestor.depth > upper.depth:
                    ancestor = ancestor.parent
                if ancestor is not upper:
                    raise AssertionError(
                        f"windows at depths {upper.depth}, {lower.depth} share a stamp off one path"
                    )

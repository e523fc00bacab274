"""Which prefix-cache entries keep a sliding-window window, and which windows go first under pressure.

An entry's window component is the SWA blocks a computation resuming at the entry's end reads (the
last ``W - 1`` tokens, page-aligned). Two kinds (``WindowKind``):

- *planned* windows, where a later prompt is expected to resume: the end of every prompt (its last
  full block), the branch points the planner found and the other points a sequence carries in
  ``retain_at`` (where a prompt diverged from a cached path, chat message boundaries), and every
  ``retain_every_tokens`` tokens if set;
- *spare* windows (``opportunistic=True``): at every other block boundary a sequence passes. They
  cost one SWA block each, not a window's worth: the windows ending at consecutive boundaries share
  all but one block, and the blocks are the ones the sequence's window leaves behind as it slides,
  which would otherwise be freed. So with SWA memory to spare every block boundary hits, as in
  vLLM and SGLang.

When the SWA pool runs short, spare windows are dropped first, least recently used first, and only
then planned ones, least recently used first: under pressure the cache falls back to the planned
windows, never below them. A dropped window's entry keeps its full component, so a later hit
resumes at the deepest window above it (counted as cut short). When an entry moves down a tier, a
planned window goes with it; a spare one only if the tier has room for it without pushing anything
out (``PrefixCache._demote``).

The drop order is kept up to date instead of re-scanned: each kind's holders wait in a heap keyed
``(last_access, depth)``, which the cache updates as windows are retained, attached, released and
their entries hit (``touched``), so dropping a window costs O(log n). The depth breaks ties exactly
as the former scan did (a sort of the tree's pre-order traversal by ``last_access``, ties in
traversal order): an access stamp goes to one new entry or to the entries of one hit path, so
entries that share one lie on a single root path, where the traversal meets the shallower first.
Among spare windows on one path the shallowest goes first, and that frees a block: the windows
deeper down do not hold its first block. The heap is a ``NodeHeap`` (lazy deletion).

Holds block ids, never tensors; the cache holds one SWA-pool reference on every block of a window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_sequence import KVSequence
from worker.kv_cache.node_heap import NodeHeap
from worker.kv_cache.radix import Node, Tier, WindowKind


class WindowRetention:
    def __init__(
        self, blocks: BlockManager, retain_every_tokens: int | None = None, opportunistic: bool = True
    ):
        self.blocks = blocks
        self.retain_every_tokens = retain_every_tokens
        self.opportunistic = opportunistic
        self.needs_window = blocks.window > 0
        # The entries holding a window, one heap per kind, in drop order.
        self._holders = {kind: NodeHeap(tie_break=lambda node: node.depth) for kind in WindowKind}

    def retain_passed(
        self, seq: KVSequence, previous_computed: int, path: list[Node]
    ) -> dict[WindowKind, int]:
        """Retains the windows ``seq`` passed since ``previous_computed`` on ``path`` (its nodes from
        the root): planned ones at its retention points, spare ones at the other block boundaries.
        Returns how many of each kind. Call before ``seq``'s dead SWA blocks are released: the
        window's blocks are taken from the sequence, one more reference each."""
        size = self.blocks.block_size
        retained = dict.fromkeys(WindowKind, 0)
        if not self.needs_window:
            return retained
        planned = self._retention_points(seq, previous_computed)
        lo, hi = previous_computed, seq.num_computed_tokens
        spare = range((lo // size + 1) * size, hi + 1, size) if self.opportunistic else ()
        for end_token in sorted(planned.union(spare)):
            depth = end_token // size - 1
            if depth < len(path) and path[depth].tier is Tier.DEVICE:
                kind = WindowKind.PLANNED if end_token in planned else WindowKind.SPARE
                if self._retain(seq, path[depth], kind):
                    retained[kind] += 1
        return retained

    def _retention_points(self, seq: KVSequence, previous_computed: int) -> set[int]:
        size = self.blocks.block_size
        lo, hi = previous_computed, seq.num_computed_tokens
        points = {p for p in seq.retain_at if lo < p <= hi}
        prompt_end = seq.prompt_len // size * size
        if lo < prompt_end <= hi:
            points.add(prompt_end)
        if self.retain_every_tokens:
            step = max(size, self.retain_every_tokens // size * size)
            points.update(range((lo // step + 1) * step, hi + 1, step))
        return {p for p in points if p > 0 and p % size == 0}

    def _retain(self, seq: KVSequence, node: Node, kind: WindowKind) -> bool:
        if node.window is not None:
            if kind is WindowKind.PLANNED:
                return self.plan(node)
            return False
        first = self.blocks.first_live_swa_block(node.end_token)
        if first < seq.swa_first_block:
            return False  # the sequence no longer holds that window (cannot happen when called in time)
        window = tuple(seq.swa_blocks[first - seq.swa_first_block : node.depth + 1 - seq.swa_first_block])
        for block in window:
            self.blocks.swa.retain(block)
        node.window = window
        node.window_len = len(window)
        node.window_kind = kind
        node.window_dropped = False
        self._holders[kind].push(node)
        return True

    def plan(self, node: Node) -> bool:
        """Makes ``node``'s spare window (on the device) a planned one; True if it changed."""
        if node.window is None or node.window_kind is WindowKind.PLANNED:
            return False
        self._holders[WindowKind.SPARE].discard(node)
        node.window_kind = WindowKind.PLANNED
        self._holders[WindowKind.PLANNED].push(node)
        return True

    def attach(self, node: Node, window: tuple[int, ...]) -> None:
        """Gives ``node`` (just promoted to the device) the SWA blocks its window was loaded into,
        already allocated for the cache, of the kind it had below; an empty ``window`` leaves it
        without one."""
        node.window = window or None
        node.window_len = len(window)
        if not window:
            node.window_kind = None
            return
        node.window_kind = node.window_kind or WindowKind.PLANNED  # an entry read back from disk
        self._holders[node.window_kind].push(node)

    def release(self, node: Node, keep_length: bool = False) -> None:
        """Returns ``node``'s window blocks to the SWA pool. ``keep_length`` keeps ``window_len`` and
        the kind: the window moves down a tier with its entry instead of being dropped."""
        for block in node.window or ():
            self.blocks.swa.release(block)
        node.window = None
        if not keep_length:
            node.window_len = 0
            node.window_kind = None
        for holders in self._holders.values():
            holders.discard(node)

    def drop(self, node: Node) -> None:
        """Drops ``node``'s window for good (under pressure): later hits resume above it."""
        self.release(node)
        node.window_dropped = True

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a window holder moves to its new place in the drop order."""
        for holders in self._holders.values():
            holders.touched(node)

    def drop_least_recent(self, swa_needed: int) -> int:
        """Drops retained windows, spare ones first, each kind least recently used first, until
        ``swa_needed`` SWA blocks are free or none is left; returns how many were dropped. A window a
        running sequence shares frees no block, but is dropped all the same."""
        dropped = 0
        for kind in (WindowKind.SPARE, WindowKind.PLANNED):
            holders = self._holders[kind].least_recent()
            try:
                for node in holders:
                    if self.blocks.swa.num_free >= swa_needed:
                        return dropped
                    self._drop(node)
                    dropped += 1
            finally:
                holders.close()
        return dropped

    def _drop(self, node: Node) -> None:
        self.drop(node)

    def check_integrity(self, nodes: Iterable[Node]) -> None:
        """The drop order agrees with a full scan of ``nodes`` (the whole tree): the same holders of
        each kind, the same keys, and holders that share an access stamp on one root path (so depth
        orders them as the tree's traversal does)."""
        holders = [node for node in nodes if node.window]
        for kind, heap in self._holders.items():
            heap.check_integrity([n for n in holders if n.window_kind is kind], f"{kind.value} drop order")
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

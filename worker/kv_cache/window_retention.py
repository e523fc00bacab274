"""Which prefix-cache entries keep a sliding-window window, and which windows go first under pressure.

An entry's window component is the SWA blocks a computation resuming at the entry's end reads (the
last ``W - 1`` tokens, page-aligned). Windows are retained only where a batch will resume: at the end
of every prompt (its last full block), at the branch points the planner found (``Sequence.retain_at``)
and every ``retain_every_tokens`` tokens if set; nowhere else. When the SWA pool runs short, retained
windows are dropped least recently used first; the entry keeps its full component, so a later hit
resumes at the deepest window above it (counted as cut short).

Holds block ids, never tensors; the cache holds one SWA-pool reference on every block of a window.
"""

from __future__ import annotations

from worker.engine.block_manager import BlockManager
from worker.engine.sequence import Sequence
from worker.kv_cache.radix import Node, RadixTree, Tier


class WindowRetention:
    def __init__(self, blocks: BlockManager, tree: RadixTree, retain_every_tokens: int | None = None):
        self.blocks = blocks
        self.tree = tree
        self.retain_every_tokens = retain_every_tokens
        self.needs_window = blocks.window > 0

    def retain_passed(self, seq: Sequence, previous_computed: int, path: list[Node]) -> int:
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

    def _retention_points(self, seq: Sequence, previous_computed: int) -> list[int]:
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

    def _retain(self, seq: Sequence, node: Node) -> bool:
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
        return True

    def attach(self, node: Node, window: tuple[int, ...]) -> None:
        """Gives ``node`` (just promoted to the device) the SWA blocks its window was loaded into,
        already allocated for the cache; an empty ``window`` leaves it without one."""
        node.window = window or None
        node.window_len = len(window)

    def release(self, node: Node, keep_length: bool = False) -> None:
        """Returns ``node``'s window blocks to the SWA pool. ``keep_length`` keeps ``window_len``:
        the window moves down a tier with its entry instead of being dropped."""
        for block in node.window or ():
            self.blocks.swa.release(block)
        node.window = None
        if not keep_length:
            node.window_len = 0

    def drop_least_recent(self, swa_needed: int) -> int:
        """Drops retained windows, least recently used first, until ``swa_needed`` SWA blocks are free
        or none is left; returns how many were dropped. A window a running sequence shares frees no
        block, but is dropped all the same."""
        holders = sorted((n for n in self.tree.nodes() if n.window), key=lambda n: n.last_access)
        dropped = 0
        for node in holders:
            if self.blocks.swa.num_free >= swa_needed:
                break
            self.release(node)
            dropped += 1
        return dropped

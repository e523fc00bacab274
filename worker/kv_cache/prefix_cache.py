"""The device tier of the prefix cache: which blocks the radix tree keeps, hits, retention, eviction.

The cache holds one reference on every block it keeps (``BlockPool`` ref counts), so a block a running
sequence also uses is never freed under it. A prompt hits up to the deepest block boundary ``p`` such
that the tree has full KV for ``[0, p)`` *and* a retained sliding-window window ending at ``p``; a
deeper full-KV match without a window there is counted as a hit cut short.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from worker.engine.block_manager import BlockManager
from worker.engine.sequence import Sequence
from worker.kv_cache.radix import Node, RadixTree


@dataclass(frozen=True)
class PrefixMatch:
    num_cached_tokens: int
    nodes: tuple[Node, ...]  # the path [0, num_cached_tokens) in blocks
    window: tuple[int, ...]  # SWA blocks to resume from (empty when the model has no SWA layers)
    cut_short_tokens: int  # matched full KV beyond the hit that had no window to resume from


@dataclass
class CacheStats:
    lookups: int = 0
    hit_tokens: int = 0
    lookup_tokens: int = 0
    hits_cut_short: int = 0
    tokens_cut_short: int = 0
    windows_retained: int = 0
    nodes_evicted: int = 0
    windows_dropped: int = 0


class PrefixCache:
    def __init__(self, blocks: BlockManager, retain_every_tokens: int | None = None):
        self.blocks = blocks
        self.tree = RadixTree()
        self.retain_every_tokens = retain_every_tokens
        self.stats = CacheStats()
        self.needs_window = blocks.window > 0
        blocks.reclaim = self.reclaim

    # -- lookup ----------------------------------------------------------------------------------
    def _blocks_of(self, seq: Sequence, num_blocks: int) -> list[tuple[int, ...]]:
        size = self.blocks.block_size
        return [tuple(seq.token_ids[i * size : (i + 1) * size]) for i in range(num_blocks)]

    def match(self, seq: Sequence) -> PrefixMatch:
        """Deepest resumable prefix of ``seq``; always leaves at least one token to compute."""
        size = self.blocks.block_size
        max_blocks = (seq.num_tokens - 1) // size
        hashes = self.blocks.hashes_for(seq, max_blocks)
        path = self.tree.walk(hashes, self._blocks_of(seq, max_blocks))
        depth = len(path)
        while depth and self.needs_window and path[depth - 1].window is None:
            depth -= 1
        window = path[depth - 1].window if depth and self.needs_window else ()
        return PrefixMatch(depth * size, tuple(path[:depth]), window or (), (len(path) - depth) * size)

    def apply(self, seq: Sequence, match: PrefixMatch) -> None:
        """Makes ``seq`` resume at the hit: it takes references on the matched blocks."""
        stamp = self.tree.tick()
        for node in match.nodes:
            self.blocks.full.retain(node.full_block)
            seq.full_blocks.append(node.full_block)
            seq.block_hashes.append(node.block_hash)
            node.last_access = stamp
        for block in match.window:
            self.blocks.swa.retain(block)
        seq.swa_blocks = list(match.window)
        num_blocks = len(match.nodes)
        seq.swa_first_block = num_blocks - len(match.window)
        seq.num_computed_tokens = match.num_cached_tokens

    def record_lookup(self, seq: Sequence, match: PrefixMatch) -> None:
        self.stats.lookups += 1
        self.stats.lookup_tokens += seq.prompt_len
        self.stats.hit_tokens += match.num_cached_tokens
        if match.cut_short_tokens:
            self.stats.hits_cut_short += 1
            self.stats.tokens_cut_short += match.cut_short_tokens

    # -- insertion ---------------------------------------------------------------------------------
    def cache_computed(self, seq: Sequence, previous_computed: int) -> None:
        """Adds ``seq``'s newly completed full blocks to the tree and retains windows it just passed.

        Call after a step, before the sequence's dead SWA blocks are released.
        """
        size = self.blocks.block_size
        num_complete = seq.num_computed_tokens // size
        if num_complete == 0:
            return
        path = self.tree.walk(seq.block_hashes[:num_complete], self._blocks_of(seq, num_complete))
        parent = path[-1] if path else None
        for i in range(len(path), num_complete):
            if parent is not None and parent.block_hash != seq.block_hashes[i - 1]:
                break
            siblings = self.tree.children_of(parent)
            if seq.block_hashes[i] in siblings:  # same hash, different tokens: a collision; stop here
                break
            self.blocks.full.retain(seq.full_blocks[i])
            parent = self.tree.insert(
                parent,
                seq.block_hashes[i],
                tuple(seq.token_ids[i * size : (i + 1) * size]),
                seq.full_blocks[i],
            )
            path.append(parent)
        for end_token in self._retention_points(seq, previous_computed):
            depth = end_token // size - 1
            if depth < len(path):
                self._retain_window(seq, path[depth])

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

    def _retain_window(self, seq: Sequence, node: Node) -> None:
        if node.window is not None or not self.needs_window:
            return
        first = self.blocks.first_live_swa_block(node.end_token)
        if first < seq.swa_first_block:
            return  # the sequence no longer holds that window (cannot happen when called in time)
        window = tuple(seq.swa_blocks[first - seq.swa_first_block : node.depth + 1 - seq.swa_first_block])
        for block in window:
            self.blocks.swa.retain(block)
        node.window = window
        self.stats.windows_retained += 1

    # -- eviction ----------------------------------------------------------------------------------
    def reclaim(self, full_needed: int, swa_needed: int) -> None:
        """Frees least-recently-used cache entries until the pools have the blocks asked for (or no
        entry only the cache holds is left)."""
        if swa_needed > self.blocks.swa.num_free:
            self._drop_windows(swa_needed)
        if full_needed > self.blocks.full.num_free:
            self._evict_leaves(full_needed)

    def _evictable(self, node: Node) -> bool:
        return node.is_leaf and self.blocks.full.ref_counts[node.full_block] == 1

    def _evict_leaves(self, full_needed: int) -> None:
        heap = [(n.last_access, id(n), n) for n in self.tree.nodes() if self._evictable(n)]
        heapq.heapify(heap)
        while heap and self.blocks.full.num_free < full_needed:
            _, _, node = heapq.heappop(heap)
            self._remove(node)
            parent = node.parent
            if parent is not None and self._evictable(parent):
                heapq.heappush(heap, (parent.last_access, id(parent), parent))

    def _drop_windows(self, swa_needed: int) -> None:
        holders = sorted((n for n in self.tree.nodes() if n.window), key=lambda n: n.last_access)
        for node in holders:
            if self.blocks.swa.num_free >= swa_needed:
                return
            self._release_window(node)
            self.stats.windows_dropped += 1

    def _release_window(self, node: Node) -> None:
        for block in node.window or ():
            self.blocks.swa.release(block)
        node.window = None

    def _remove(self, node: Node) -> None:
        self._release_window(node)
        self.tree.remove_leaf(node)
        self.blocks.full.release(node.full_block)
        self.stats.nodes_evicted += 1

    def clear(self) -> None:
        while self.tree.num_nodes:
            for node in [n for n in self.tree.nodes() if n.is_leaf]:
                self._remove(node)

    # -- accounting --------------------------------------------------------------------------------
    @property
    def num_cached_blocks(self) -> int:
        return self.tree.num_nodes

    @property
    def num_windows(self) -> int:
        return sum(1 for n in self.tree.nodes() if n.window)

    def held_blocks(self) -> tuple[dict[int, int], dict[int, int]]:
        """References the cache holds, per full block and per SWA block."""
        full: dict[int, int] = {}
        swa: dict[int, int] = {}
        for node in self.tree.nodes():
            full[node.full_block] = full.get(node.full_block, 0) + 1
            for block in node.window or ():
                swa[block] = swa.get(block, 0) + 1
        return full, swa

    def check_integrity(self) -> None:
        self.tree.check_integrity()
        full, swa = self.held_blocks()
        for block, refs in full.items():
            if self.blocks.full.ref_counts[block] < refs:
                raise AssertionError(f"full block {block}: cache holds {refs} refs, pool counts fewer")
        for block, refs in swa.items():
            if self.blocks.swa.ref_counts[block] < refs:
                raise AssertionError(f"swa block {block}: cache holds {refs} refs, pool counts fewer")
        for node in self.tree.nodes():
            if self.blocks.full.hashes.get(node.full_block) != node.block_hash:
                raise AssertionError(f"cached block {node.full_block} lost its hash")

"""SGLang's SWA radix cache (``SWARadixCache``), re-implemented on token blocks (no tensors).

What is modelled, as SGLang's design reads:
- Two pools: full-layer KV and SWA-layer KV, in tokens, the SWA pool ``swa_full_tokens_ratio`` times
  the full pool (SGLang's default 0.8); at equal bytes, ``full x (bF + ratio x bS) = budget``.
- One radix tree; each node holds full KV and SWA KV for its tokens. SWA KV evicted from an inner
  node leaves a tombstone (full KV only); evicted from a leaf, the leaf goes.
- Two LRU orders: full eviction takes unlocked leaves least recently used first (freeing both
  components); SWA eviction takes untombstoned nodes least recently used first.
- A match walks the tree and stops at the deepest block boundary ``p`` whose window
  ``[window_start(p), p)`` has no tombstone (every node walked counts as accessed). The hit's nodes
  are locked, the full component on all of them and the SWA component on the window, while the
  request runs.
- A running request holds full and SWA KV for every token it computes (the radix cache frees no
  out-of-window SWA KV during prefill), in chunks of ``chunk_tokens``; at the end its full blocks are
  inserted, reviving tombstones it recomputed, and its partial last block is freed.
Requests run one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.bench.cache_trace_memory import BudgetTooSmall, Holding, KVBytes
from worker.bench.cache_trace_radix import BlockRadixTree, RadixNode
from worker.bench.cache_trace_workloads import TraceRequest

DEFAULT_SWA_FULL_TOKENS_RATIO = 0.8


class SglangSwaRadixCache:
    def __init__(
        self,
        kv: KVBytes,
        capacity_bytes: int,
        chunk_tokens: int,
        swa_full_tokens_ratio: float = DEFAULT_SWA_FULL_TOKENS_RATIO,
    ):
        self.kv = kv
        self.chunk_tokens = chunk_tokens
        self.ratio = swa_full_tokens_ratio
        self.name = f"SGLang SWA radix (ratio {swa_full_tokens_ratio:g})"
        self.num_full = int(
            capacity_bytes // (kv.full_block_bytes + swa_full_tokens_ratio * kv.swa_block_bytes)
        )
        self.num_swa = int(self.num_full * swa_full_tokens_ratio)
        self.full_free = self.num_full
        self.swa_free = self.num_swa
        self.tree = BlockRadixTree()

    # -- pools -------------------------------------------------------------------------------------
    def _make_room(self, full: int, swa: int) -> None:
        if self.full_free < full:
            for node in self.tree.least_recent_leaves():
                self._delete(node)
                if self.full_free >= full:
                    break
        if self.swa_free < swa:
            for node in self.tree.least_recent_swa():
                if node.is_leaf and node.full_locks == 0:
                    self._delete(node)
                else:
                    self.tree.tombstone(node)
                    self.swa_free += 1
                if self.swa_free >= swa:
                    break
        if self.full_free < full or self.swa_free < swa:
            raise BudgetTooSmall(
                f"{self.name}: {self.num_full} full / {self.num_swa} SWA blocks hold no request"
            )
        self.full_free -= full
        self.swa_free -= swa

    def _delete(self, node: RadixNode) -> None:
        self.full_free += 1
        self.swa_free += node.has_swa
        self.tree.remove_leaf(node)

    # -- requests ----------------------------------------------------------------------------------
    def hit_blocks(self, path: list[RadixNode]) -> int:
        p = len(path)
        while p and not all(path[j].has_swa for j in range(self.kv.window_start(p), p)):
            p -= 1
        return p

    def serve(self, request: TraceRequest) -> int:
        """Runs one request to the end of its prompt; returns its cache-hit tokens."""
        size = self.kv.block_size
        length = request.prompt_len
        blocks = [request.token_ids[i * size : (i + 1) * size] for i in range(length // size)]
        path = self.tree.walk(request.salt, blocks[: (length - 1) // size])
        for node in path:
            self.tree.touch(node)
        hit = self.hit_blocks(path)
        window = path[self.kv.window_start(hit) : hit]
        self._lock(path[:hit], window, +1)
        owned_full = owned_swa = 0  # blocks [hit, ...) this request computed, in each pool
        try:
            computed = hit * size
            while computed < length:
                end = min(length, computed + self.chunk_tokens)
                new = -(-end // size) - hit - owned_full
                self._make_room(new, new)
                owned_full += new
                owned_swa += new
                computed = end
            moved_full, moved_swa = self._insert(request.salt, blocks, hit)
            owned_full -= moved_full
            owned_swa -= moved_swa
        finally:
            # What the tree did not take (duplicates of cached KV, the partial last block) is freed.
            self.full_free += owned_full
            self.swa_free += owned_swa
            self._lock(path[:hit], window, -1)
        return hit * size

    def _insert(self, salt: str, blocks: list[tuple[int, ...]], hit: int) -> tuple[int, int]:
        """Gives the request's complete blocks past the hit to the tree; returns how many of its full
        and SWA blocks the tree took."""
        parent = self.tree.root(salt)
        for tokens in blocks[:hit]:
            parent = parent.children[tokens]
        moved_full = moved_swa = 0
        for tokens in blocks[hit:]:
            node = parent.children.get(tokens)
            if node is None:
                node = self.tree.insert(parent, tokens, has_swa=True)
                moved_full += 1
                moved_swa += 1
            else:
                if not node.has_swa:
                    self.tree.revive(node)  # the recomputed SWA KV fills the tombstone
                    moved_swa += 1
                self.tree.touch(node)
            parent = node
        return moved_full, moved_swa

    def _lock(self, full: list[RadixNode], swa: list[RadixNode], delta: int) -> None:
        for node in full:
            node.full_locks += delta
        for node in swa:
            node.swa_locks += delta
        if delta < 0:
            for node in full:
                self.tree.offer(node)

    def serve_batch(self, batch: Iterable[TraceRequest]) -> int:
        return sum(self.serve(r) for r in batch)

    def holding(self) -> Holding:
        kv = self.kv
        return Holding(
            self.tree.num_nodes * kv.block_size,
            self.tree.num_nodes * kv.full_block_bytes + self.tree.num_swa * kv.swa_block_bytes,
        )

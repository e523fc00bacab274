"""A prefix cache with no sliding-window awareness: every layer's KV for every cached token.

The plain radix cache (SGLang's ``RadixCache``, or vLLM before its hybrid allocator, which treated
SWA layers as full ones): one pool of blocks that each hold all 70 layers, one node per block, a hit
is the longest cached prefix (at most ``prompt_len - 1`` tokens), a running request holds every
block of its prompt, unlocked leaves are evicted least recently used first. Requests run one at a
time, in chunks of ``chunk_tokens``. This is the baseline of the capacity multiplier (1.0).
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.bench.cache_trace_memory import BudgetTooSmall, Holding, KVBytes
from worker.bench.cache_trace_radix import BlockRadixTree
from worker.bench.cache_trace_workloads import TraceRequest


class EveryLayerCache:
    name = "every layer"

    def __init__(self, kv: KVBytes, capacity_bytes: int, chunk_tokens: int):
        self.kv = kv
        self.chunk_tokens = chunk_tokens
        self.num_blocks = capacity_bytes // kv.every_layer_block_bytes
        self.free = self.num_blocks
        self.tree = BlockRadixTree()

    def _make_room(self, num_blocks: int) -> None:
        if self.free < num_blocks:
            for node in self.tree.least_recent_leaves():
                self.tree.remove_leaf(node)
                self.free += 1
                if self.free >= num_blocks:
                    break
        if self.free < num_blocks:
            raise BudgetTooSmall(f"{self.name}: {self.num_blocks} blocks hold no request")
        self.free -= num_blocks

    def serve(self, request: TraceRequest) -> int:
        """Runs one request to the end of its prompt; returns its cache-hit tokens."""
        size = self.kv.block_size
        length = request.prompt_len
        blocks = [request.token_ids[i * size : (i + 1) * size] for i in range(length // size)]
        path = self.tree.walk(request.salt, blocks[: (length - 1) // size])
        hit = len(path)
        for node in path:
            self.tree.touch(node)
            node.full_locks += 1
        owned = 0  # blocks [hit, hit + owned) this request computed
        try:
            computed = hit * size
            while computed < length:
                end = min(length, computed + self.chunk_tokens)
                new = -(-end // size) - hit - owned
                self._make_room(new)
                owned += new
                computed = end
            parent = path[-1] if path else self.tree.root(request.salt)
            for tokens in blocks[hit:]:
                node = parent.children.get(tokens)
                if node is None:
                    node = self.tree.insert(parent, tokens, has_swa=False)
                    owned -= 1  # the tree takes it
                else:
                    self.tree.touch(node)
                parent = node
        finally:
            self.free += owned  # duplicates and the partial last block
            for node in path:
                node.full_locks -= 1
                self.tree.offer(node)
        return hit * size

    def serve_batch(self, batch: Iterable[TraceRequest]) -> int:
        return sum(self.serve(r) for r in batch)

    def holding(self) -> Holding:
        return Holding(
            self.tree.num_nodes * self.kv.block_size, self.tree.num_nodes * self.kv.every_layer_block_bytes
        )

"""vLLM's hybrid KV-cache allocator with prefix caching, re-implemented on block hashes (no tensors).

What is modelled (vLLM v1's ``KVCacheCoordinator`` + ``BlockPool``, as its design reads):
- One pool shared by every layer group. A token block costs a full-layer block and an SWA-layer
  block (vLLM groups the 60 SWA layers into groups whose pages equal the full group's; here the
  SWA block's bytes are simply its share of the pool).
- Every computed full block of every group is cached under its chained hash. A block nobody uses
  sits in one free queue, least recently freed first; allocating takes free bytes, evicting from
  the queue's head (its hash is forgotten).
- While a request computes, the SWA blocks that fell out of its window are freed at once
  (``remove_skipped_blocks``): they enter the queue early, so they are evicted before the blocks of
  finished requests. A finished request frees its blocks tail first.
- A hit is the deepest block boundary ``p`` (at most ``prompt_len - 1`` tokens) whose full blocks
  ``[0, p)`` and SWA blocks ``[window_start(p), p)`` are all cached. The blocks of the hit are taken
  out of the queue while the request runs.
Requests run one at a time, in chunks of ``chunk_tokens``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from worker.bench.cache_trace_memory import BudgetTooSmall, Holding, KVBytes
from worker.bench.cache_trace_workloads import TraceRequest

FULL, SWA = "full", "swa"


@dataclass(eq=False)
class _Block:
    kind: str
    block_hash: int | None  # None until its tokens are complete (then it is cached)
    size: int
    refs: int = 1


def block_hashes(request: TraceRequest, block_size: int) -> list[int]:
    """Chained hashes of the request's full blocks, salted with its account."""
    hashes: list[int] = []
    parent: object = request.salt
    for i in range(request.prompt_len // block_size):
        parent = hash((parent, request.token_ids[i * block_size : (i + 1) * block_size]))
        hashes.append(parent)
    return hashes


class VllmHybridCache:
    name = "vLLM hybrid"

    def __init__(self, kv: KVBytes, capacity_bytes: int, chunk_tokens: int):
        self.kv = kv
        self.chunk_tokens = chunk_tokens
        self.capacity_bytes = capacity_bytes
        self.unused_bytes = capacity_bytes  # bytes no block occupies
        self.cached: dict[tuple[str, int], _Block] = {}
        self.free_queue: OrderedDict[int, _Block] = (
            OrderedDict()
        )  # cached, unused: least recently freed first

    # -- pool --------------------------------------------------------------------------------------
    def _size(self, kind: str) -> int:
        return self.kv.full_block_bytes if kind == FULL else self.kv.swa_block_bytes

    def _allocate(self, kind: str) -> _Block:
        size = self._size(kind)
        while self.unused_bytes < size:
            if not self.free_queue:
                raise BudgetTooSmall(f"{self.name}: {self.capacity_bytes} bytes do not hold one request")
            _, victim = self.free_queue.popitem(last=False)
            del self.cached[(victim.kind, victim.block_hash)]
            self.unused_bytes += victim.size
        self.unused_bytes -= size
        return _Block(kind, None, size)

    def _take(self, key: tuple[str, int]) -> _Block:
        block = self.cached[key]
        if block.refs == 0:
            del self.free_queue[id(block)]
        block.refs += 1
        return block

    def _free(self, blocks: Iterable[_Block]) -> None:
        for block in blocks:
            block.refs -= 1
            if block.refs:
                continue
            if block.block_hash is None:
                self.unused_bytes += block.size
            else:
                self.free_queue[id(block)] = block

    def _cache(self, block: _Block, kind: str, block_hash: int) -> None:
        # A block whose hash is already cached (recomputed behind a missing window) is not cached twice.
        if (kind, block_hash) not in self.cached:
            block.block_hash = block_hash
            self.cached[(kind, block_hash)] = block

    # -- requests ----------------------------------------------------------------------------------
    def hit_blocks(self, hashes: list[int], max_blocks: int) -> int:
        """The deepest resumable block boundary (see the module docstring)."""
        full = 0
        while full < max_blocks and (FULL, hashes[full]) in self.cached:
            full += 1
        p = full
        while p and not all((SWA, hashes[j]) in self.cached for j in range(self.kv.window_start(p), p)):
            p -= 1
        return p

    def serve(self, request: TraceRequest) -> int:
        """Runs one request to the end of its prompt; returns its cache-hit tokens."""
        size = self.kv.block_size
        hashes = block_hashes(request, size)
        length = request.prompt_len
        hit = self.hit_blocks(hashes, (length - 1) // size)
        full = [self._take((FULL, hashes[i])) for i in range(hit)]
        swa = {i: self._take((SWA, hashes[i])) for i in range(self.kv.window_start(hit), hit)}
        computed = hit * size
        try:
            while computed < length:
                end = min(length, computed + self.chunk_tokens)
                # [0, first_live): out of the window of every token from here on, freed now
                first_live = max(0, computed - self.kv.window + 1) // size
                self._free(swa.pop(i) for i in sorted(swa) if i < first_live)
                for i in range(len(full), -(-end // size)):
                    full.append(self._allocate(FULL))
                    swa[i] = self._allocate(SWA)
                computed = end
                for i in range(computed // size):
                    if full[i].block_hash is None:
                        self._cache(full[i], FULL, hashes[i])
                    if i in swa and swa[i].block_hash is None:
                        self._cache(swa[i], SWA, hashes[i])
        finally:
            self._free(reversed(full))
            self._free(swa[i] for i in sorted(swa, reverse=True))
        return hit * size

    def serve_batch(self, batch: Iterable[TraceRequest]) -> int:
        return sum(self.serve(r) for r in batch)

    def holding(self) -> Holding:
        full = sum(1 for kind, _ in self.cached if kind == FULL)
        return Holding(full * self.kv.block_size, self.capacity_bytes - self.unused_bytes)

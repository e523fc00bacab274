"""Prefix-cache eviction cost on a large tree, without a model (eviction moves block ids, never KV).

The cache keeps its eviction orders up to date (``worker/kv_cache/eviction_queue.py`` for device
entries, ``worker/kv_cache/window_retention.py`` for retained sliding windows), so a reclaim costs
O(log n) per evicted entry or dropped window. The peers, timed on the same trees, are one full scan
of the tree for evictable entries, and one scan and sort of the window holders: what every reclaim
cost before, however few blocks it asked for. Under pressure the scheduler reclaims a few blocks per
admission, so the scan was paid once per admission.
"""

from __future__ import annotations

import random
import time

from worker.engine.sampling_params import SamplingParams
from worker.engine.sequence import Sequence
from worker.kv_cache import BlockManager, KVCacheManager, PrefixCache
from worker.kv_cache.radix import Tier

BLOCK_SIZE = 16
FANOUT = 100  # leaves under each shared stem
STEM_BLOCKS = 2


def build_tree(num_leaves: int, window: int = 0) -> PrefixCache:
    """A cache holding ``num_leaves`` one-block leaves under stems of ``STEM_BLOCKS`` blocks, touched
    in random order, every entry held by the cache alone. With a sliding ``window`` (at most
    ``BLOCK_SIZE``) each leaf, a prompt's end, also retains a one-block window."""
    num_stems = max(1, num_leaves // FANOUT)
    num_nodes = num_stems * STEM_BLOCKS + num_leaves
    num_swa_blocks = num_leaves + STEM_BLOCKS + 8 if window else 0
    blocks = BlockManager(BLOCK_SIZE, num_nodes + 8, num_swa_blocks, window=window)
    cache = PrefixCache(blocks)
    kv = KVCacheManager(blocks, cache)
    leaves = [(stem, leaf) for stem in range(num_stems) for leaf in range(num_leaves // num_stems)]
    random.Random(0).shuffle(leaves)
    for arrival, (stem, leaf) in enumerate(leaves):
        prompt = [stem] * (STEM_BLOCKS * BLOCK_SIZE) + [leaf] * BLOCK_SIZE + [0]
        seq = Sequence(str(arrival), None, prompt, SamplingParams(max_tokens=1), arrival)
        num_tokens = kv.admit(seq, kv.match(seq), max_tokens=len(prompt))
        kv.advance(seq, num_tokens)
        kv.release(seq, preempted=False)
    return cache


def _scan_for_evictable(cache: PrefixCache) -> int:
    ref_counts = cache.blocks.full.ref_counts
    return sum(
        1
        for n in cache.tree.nodes()
        if n.tier is Tier.DEVICE
        and ref_counts[n.full_block] == 1
        and all(c.tier is not Tier.DEVICE for c in n.children.values())
    )


def eviction_times(num_leaves: int, repeats: int = 3) -> dict:
    """Reclaims half the leaves one block per call; prints and returns the times."""
    cache = build_tree(num_leaves)
    num_nodes = cache.tree.num_nodes
    scan_s = min(_timed(lambda: _scan_for_evictable(cache)) for _ in range(repeats))
    pool = cache.blocks.full
    num_blocks = num_leaves // 2
    start = time.perf_counter()
    for _ in range(num_blocks):
        cache.reclaim(pool.num_free + 1, 0)
    reclaim_s = time.perf_counter() - start
    per_block_s = reclaim_s / cache.stats.nodes_evicted
    print(
        f"   {num_blocks} one-block reclaims from {num_leaves} leaves ({num_nodes} entries): "
        f"{reclaim_s * 1000:.1f} ms, {per_block_s * 1e6:.1f} us per block"
    )
    print(
        f"   peer, one full scan of the tree for evictable entries: {scan_s * 1000:.1f} ms "
        f"({scan_s / per_block_s:.0f}x a one-block reclaim)"
    )
    return {
        "evict_per_block_s": per_block_s,
        "evict_scan_s": scan_s,
        "evict_scan_over_reclaim": scan_s / per_block_s,
    }


def _scan_window_holders(cache: PrefixCache) -> int:
    holders = sorted((n for n in cache.tree.nodes() if n.window), key=lambda n: n.last_access)
    return len(holders)


def window_drop_times(num_windows: int, repeats: int = 3) -> dict:
    """Drops half the retained windows of a tree holding ``num_windows``, one window per call, as an
    admission short of one SWA block does; prints and returns the times."""
    cache = build_tree(num_windows, window=BLOCK_SIZE)
    num_held = sum(1 for n in cache.tree.nodes() if n.window)
    scan_s = min(_timed(lambda: _scan_window_holders(cache)) for _ in range(repeats))
    pool = cache.blocks.swa
    num_drops = num_held // 2
    start = time.perf_counter()
    for _ in range(num_drops):
        cache.reclaim(0, pool.num_free + 1)
    drop_s = time.perf_counter() - start
    per_drop_s = drop_s / cache.stats.windows_dropped
    print(
        f"   {num_drops} one-window drops from {num_held} retained windows ({cache.tree.num_nodes} "
        f"entries): {drop_s * 1000:.1f} ms, {per_drop_s * 1e6:.1f} us per window"
    )
    print(
        f"   peer, one scan and sort of the window holders: {scan_s * 1000:.1f} ms "
        f"({scan_s / per_drop_s:.0f}x a one-window drop)"
    )
    return {
        "window_drop_per_window_s": per_drop_s,
        "window_drop_scan_s": scan_s,
        "window_drop_scan_over_drop": scan_s / per_drop_s,
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

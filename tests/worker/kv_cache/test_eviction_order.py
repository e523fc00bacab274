"""The eviction queue and the window drop order pick what a full scan of the tree picks, in order.

No model here: sequences are driven through the KV-cache manager the way the engine drives them
(match and admit, grow by a chunk, advance, release), with a stand-in for
the KV copies so that the host tier (and its overflow, which drops entries) takes part. Every
operation runs on two caches: the real one, and one that evicts entries and drops windows by the
former full scans, kept here as the reference. Their evicted entries and dropped windows must agree,
and each victim of the real one must be the scan's choice at that moment; both caches pass
``check_integrity`` after every operation.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engine.sampling_params import SamplingParams
from worker.engine.sequence import Sequence
from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.host_store import HostStore
from worker.kv_cache.kv_cache_manager import KVCacheManager
from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.radix import Node, RadixTree, Tier, WindowKind
from worker.kv_cache.window_retention import WindowRetention

B = 4


class FakeTransfer:
    """Stands in for ``KVTransfer``: a payload is one number per block, enough for the tiers."""

    def payload_numel(self, window_len: int) -> int:
        return 1 + window_len

    def payload_bytes(self, window_len: int) -> int:
        return 4 * self.payload_numel(window_len)

    def save(self, full_block: int, window: tuple[int, ...]) -> torch.Tensor:
        return torch.full((1 + len(window),), float(full_block))

    def schedule_load(self, load) -> None:
        pass


def is_evictable(cache: PrefixCache, node: Node) -> bool:
    return (
        node.tier is Tier.DEVICE
        and cache.blocks.full.ref_counts[node.full_block] == 1
        and all(c.tier is not Tier.DEVICE for c in node.children.values())
    )


def scan_choice(cache: PrefixCache) -> Node | None:
    """The entry a full scan evicts next: least recently used, ties by ``id``."""
    candidates = [n for n in cache.tree.nodes() if is_evictable(cache, n)]
    return min(candidates, key=lambda n: (n.last_access, id(n)), default=None)


def spare_level(node: Node, window: int) -> int:
    """A spare window's level, counted plainly: 0 off the multiples of its span (``ceil((W-1)/B)``
    blocks), else 1 + how many times 2 divides its end in spans."""
    span = -(-(window - 1) // B)
    spans, rest = divmod(node.depth + 1, span)
    if rest:
        return 0
    level = 1
    while spans % 2 == 0:
        spans //= 2
        level += 1
    return level


def drop_key(node: Node, window: int) -> tuple[int, int, int]:
    """Spare windows (by level) before message windows before planned and tail ones (one group);
    each group least recently used first."""
    kinds = {WindowKind.SPARE: 0, WindowKind.MESSAGE: 2, WindowKind.TAIL: 3, WindowKind.PLANNED: 3}
    kind = kinds[node.window_kind]
    return kind, spare_level(node, window) if kind == 0 else 0, node.last_access


def scan_window_choice(tree: RadixTree, window: int) -> Node | None:
    """The window a scan drops next: the first by ``drop_key``, ties in the order the tree's
    traversal meets them (the former scan sorted that traversal, a stable sort)."""
    return min((n for n in tree.nodes() if n.window), key=lambda n: drop_key(n, window), default=None)


class RecordingWindows(WindowRetention):
    """The real drop order; records each dropped window and checks it against the scan's choice."""

    def __init__(
        self, blocks: BlockManager, retain_every_tokens, tree: RadixTree, opportunistic: bool
    ) -> None:
        super().__init__(blocks, retain_every_tokens, opportunistic)
        self.tree = tree
        self.dropped: list[bytes] = []
        self.tied_drops = 0  # drops where several holders shared the least recent access stamp

    def _drop(self, node: Node) -> None:
        assert node is scan_window_choice(self.tree, self.blocks.window), (
            "the drop order's window is not the scan's"
        )
        self.dropped.append(node.block_hash)
        keys = [drop_key(n, self.blocks.window) for n in self.tree.nodes() if n.window]
        self.tied_drops += keys.count(min(keys)) > 1
        super()._drop(node)


class ScanWindows(RecordingWindows):
    """Drops windows by the former scan and sort of the whole tree on every call (the reference)."""

    def drop_least_recent(self, swa_needed: int) -> int:
        holders = sorted(
            (n for n in self.tree.nodes() if n.window), key=lambda n: drop_key(n, self.blocks.window)
        )
        dropped = 0
        for node in holders:
            if self.blocks.swa.num_free >= swa_needed:
                break
            self._drop(node)
            dropped += 1
        return dropped


class RecordingCache(PrefixCache):
    """The real cache; records its victims and checks each against a full scan of the moment."""

    window_retention = RecordingWindows

    def __init__(
        self, blocks: BlockManager, retain_every_tokens=None, opportunistic_windows=True, **kwargs
    ) -> None:
        super().__init__(blocks, retain_every_tokens, opportunistic_windows=opportunistic_windows, **kwargs)
        # Nothing retained yet: swap in the recording drop order.
        self.windows = self.window_retention(blocks, retain_every_tokens, self.tree, opportunistic_windows)
        self.victims: list[bytes] = []

    def _demote(self, node: Node) -> None:
        assert node is scan_choice(self), "the queue's victim is not the full scan's"
        self.victims.append(node.block_hash)
        super()._demote(node)


class ScanCache(RecordingCache):
    """Evicts and drops windows by the former full scans of the tree on every reclaim (the reference)."""

    window_retention = ScanWindows

    def _evict_leaves(self, full_needed: int) -> None:
        heap = [(n.last_access, id(n), n) for n in self.tree.nodes() if is_evictable(self, n)]
        heapq.heapify(heap)
        while heap and self.blocks.full.num_free < full_needed:
            _, _, node = heapq.heappop(heap)
            if not is_evictable(self, node):
                continue
            parent = node.parent
            self._demote(node)
            if parent is not None and is_evictable(self, parent):
                heapq.heappush(heap, (parent.last_access, id(parent), parent))


@dataclass
class World:
    """One block manager and cache, and the sequences the test keeps running."""

    blocks: BlockManager
    cache: RecordingCache
    kv: KVCacheManager
    held: list[Sequence] = field(default_factory=list)
    arrivals: int = 0

    @classmethod
    def make(
        cls,
        kind: type[RecordingCache],
        *,
        full: int,
        swa: int,
        window: int,
        host_bytes: int,
        every,
        opportunistic: bool = True,
    ):
        blocks = BlockManager(B, full, swa, window)
        host = HostStore(host_bytes)
        cache = kind(blocks, every, opportunistic, transfer=FakeTransfer(), host=host)
        return cls(blocks, cache, KVCacheManager(blocks, cache))

    def run(self, prompt: list[int], salt: str, chunk: int, *, hold: bool) -> None:
        """One request through the cache, prefill in chunks; a held one keeps its blocks."""
        self.arrivals += 1
        seq = Sequence(str(self.arrivals), None, prompt, SamplingParams(max_tokens=1), self.arrivals, salt)
        num_tokens = self.kv.admit(seq, self.kv.match(seq), chunk)
        while num_tokens:
            self.kv.advance(seq, num_tokens)
            num_tokens = min(chunk, seq.num_uncomputed_tokens)
            if num_tokens and not self.kv.grow(seq, num_tokens):
                break
        if hold and not seq.num_uncomputed_tokens:
            self.held.append(seq)
        else:
            self.kv.release(seq, preempted=False)

    def apply(self, op: tuple) -> None:
        kind, *args = op
        if kind == "run":
            prompt, salt, chunk, hold = args
            self.run(prompt, salt, chunk, hold=hold and len(self.held) < 3)
        elif kind == "release" and self.held:
            self.kv.release(self.held.pop(args[0] % len(self.held)), preempted=False)
        elif kind == "reclaim":
            self.cache.reclaim(self.blocks.full.num_free + args[0], 0)
        elif kind == "reclaim_swa":
            self.cache.reclaim(0, self.blocks.swa.num_free + args[0])
        elif kind == "demote_all":
            self.cache.demote_all()

    def check(self) -> None:
        self.kv.check_integrity(self.held)

    def shape(self) -> list[tuple[bytes, str, int]]:
        return sorted((n.block_hash, n.tier.value, n.window_len) for n in self.cache.tree.nodes())


def run_both(ops: list[tuple], **config) -> RecordingCache:
    real, reference = World.make(RecordingCache, **config), World.make(ScanCache, **config)
    for op in ops:
        real.apply(op)
        reference.apply(op)
        real.check()
        reference.check()
        assert real.cache.victims == reference.cache.victims
        assert real.cache.windows.dropped == reference.cache.windows.dropped
        assert real.shape() == reference.shape()
    return real.cache


# Prompts from a tiny alphabet with common stems, so that the tree branches and entries are shared.
STEMS = [[5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 20, 21, 22, 23], [30, 31, 32, 33, 34, 35, 36, 37, 38]]
prompts = st.tuples(st.sampled_from(STEMS), st.lists(st.integers(1, 6), max_size=9)).map(
    lambda t: t[0] + t[1]
)
runs = st.tuples(
    st.just("run"), prompts, st.sampled_from(["a", "b"]), st.sampled_from([3, 4, 8, 64]), st.booleans()
)
operations = st.one_of(  # runs three times as often as each other operation: the tree needs filling
    runs,
    runs,
    runs,
    st.tuples(st.just("release"), st.integers(0, 2)),
    st.tuples(st.just("reclaim"), st.integers(1, 6)),
    st.tuples(st.just("reclaim_swa"), st.integers(1, 6)),
    st.tuples(st.just("demote_all")),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(operations, min_size=10, max_size=50),
    full=st.integers(8, 20),
    window=st.sampled_from([0, 6]),
    host_bytes=st.sampled_from([0, 24, 4096]),
    every=st.sampled_from([None, 8]),
    opportunistic=st.booleans(),
)
def test_victims_match_the_full_scan_on_random_operations(
    ops, full, window, host_bytes, every, opportunistic
):
    run_both(
        ops, full=full, swa=12, window=window, host_bytes=host_bytes, every=every, opportunistic=opportunistic
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_long_random_run_evicts_in_the_scans_order(seed):
    rng = random.Random(seed)
    ops: list[tuple] = []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.7:
            prompt = rng.choice(STEMS) + [rng.randint(1, 6) for _ in range(rng.randint(0, 12))]
            ops.append(("run", prompt, rng.choice("ab"), rng.choice([3, 4, 8, 64]), rng.random() < 0.2))
        elif roll < 0.85:
            ops.append(("release", rng.randrange(3)))
        elif roll < 0.98:
            ops.append(("reclaim", rng.randint(1, 8)))
        else:
            ops.append(("demote_all",))
    cache = run_both(ops, full=40, swa=24, window=6, host_bytes=64, every=None)
    assert len(cache.victims) > 50  # the run did exercise eviction (to the host and out of the cache)
    assert cache.stats.promotions > 0 and cache.stats.nodes_dropped > 0


@pytest.mark.parametrize("seed", range(4))
def test_a_long_random_run_drops_windows_in_the_scans_order(seed):
    rng = random.Random(100 + seed)
    # A few fixed tails, so that prompts recur and hits stamp paths holding several windows alike.
    tails = [[rng.randint(1, 6) for _ in range(16)] for _ in range(4)]
    ops: list[tuple] = []
    for _ in range(300):
        roll = rng.random()
        if roll < 0.65:
            prompt = rng.choice(STEMS) + rng.choice(tails)[: rng.randint(0, 16)]
            ops.append(("run", prompt, rng.choice("ab"), rng.choice([3, 4, 8, 64]), rng.random() < 0.2))
        elif roll < 0.78:
            ops.append(("release", rng.randrange(3)))
        elif roll < 0.88:
            ops.append(("reclaim_swa", rng.randint(1, 8)))
        elif roll < 0.97:
            ops.append(("reclaim", rng.randint(1, 8)))
        else:
            ops.append(("demote_all",))
    # Even seeds with spare windows at every block boundary, odd ones with planned windows only.
    cache = run_both(ops, full=48, swa=20, window=6, host_bytes=64, every=8, opportunistic=seed % 2 == 0)
    # The run did drop windows, some of them among holders one hit stamped alike (the tie-break).
    assert cache.stats.windows_dropped > 50 and cache.windows.tied_drops > 0


def test_windows_one_hit_stamped_alike_drop_shallowest_first():
    world = World.make(RecordingCache, full=32, swa=16, window=6, host_bytes=0, every=8, opportunistic=False)
    prompt = list(range(1, 18))  # 4 full blocks; windows retained every 8 tokens: depths 1 and 3
    world.run(prompt, "a", 64, hold=False)
    world.run(prompt, "a", 64, hold=False)  # a hit: one access stamp for the whole path
    holders = sorted((n for n in world.cache.tree.nodes() if n.window), key=lambda n: n.depth)
    assert [n.depth for n in holders] == [1, 3] and holders[0].last_access == holders[1].last_access
    world.cache.reclaim(0, world.blocks.swa.num_free + 1)
    world.check()
    assert world.cache.windows.dropped == [holders[0].block_hash]  # the scan's traversal meets it first


def test_spare_windows_are_dropped_before_any_planned_one():
    world = World.make(RecordingCache, full=32, swa=32, window=6, host_bytes=0, every=None)
    # 6 full blocks: a planned window at 24 (the prompt's end), tail ones at 16 and 20 (the span of
    # boundaries before it), spare ones at 4-12.
    first = list(range(1, 26))
    world.run(first, "a", 64, hold=False)
    world.run(list(range(40, 65)), "a", 64, hold=False)  # newer: the same shape on another path
    kinds = {(n.token_ids[0], n.depth): n.window_kind for n in world.cache.tree.nodes() if n.window}
    assert kinds[(21, 5)] is WindowKind.PLANNED and kinds[(1, 0)] is WindowKind.SPARE
    assert kinds[(13, 3)] is kinds[(17, 4)] is WindowKind.TAIL
    assert sum(k is WindowKind.SPARE for k in kinds.values()) == 6
    world.cache.reclaim(0, world.blocks.swa.num_blocks)  # asks for every block: drops all windows
    world.check()
    by_hash = {n.block_hash: n for n in world.cache.tree.nodes()}
    dropped = [(by_hash[h].token_ids[0], by_hash[h].depth) for h in world.cache.windows.dropped]
    # Windows span 2 blocks (W=6, B=4): the spare ones ending off the span's multiples go first
    # (depths 0 and 2, the older path's first), then those at multiples (depth 1), then the tail
    # and planned ones together, the older path's first.
    assert dropped == [
        (1, 0), (9, 2), (40, 0), (48, 2), (5, 1), (44, 1),
        (13, 3), (17, 4), (21, 5), (52, 3), (56, 4), (60, 5),
    ]  # fmt: skip


def test_an_entry_in_use_is_skipped_and_stays_queued():
    world = World.make(RecordingCache, full=16, swa=8, window=0, host_bytes=0, every=None)
    world.run(list(range(1, 10)), "a", 64, hold=True)  # 2 blocks cached, both in use
    world.run(list(range(20, 29)), "a", 64, hold=False)  # 2 blocks cached, cache only
    world.cache.reclaim(world.blocks.full.num_blocks, 0)  # asks for more than can be freed
    assert len(world.cache.victims) == 2 and world.cache.num_entries(Tier.DEVICE) == 2
    world.check()
    world.kv.release(world.held.pop(), preempted=False)
    world.cache.reclaim(world.blocks.full.num_blocks, 0)
    assert len(world.cache.victims) == 4 and world.cache.num_entries(Tier.DEVICE) == 0
    world.check()


def test_under_pressure_spare_windows_thin_out_to_a_stride_on_every_path():
    # Window 6, block 4: a window spans 2 blocks. Two 16-block paths with spare windows everywhere.
    world = World.make(RecordingCache, full=64, swa=48, window=6, host_bytes=0, every=None)
    first, second = list(range(1, 66)), list(range(100, 165))
    world.run(first, "a", 64, hold=False)
    world.run(second, "a", 64, hold=False)
    windows = world.cache.windows
    before = sorted(n.depth for n in world.cache.tree.nodes() if n.window)
    assert len(before) == 2 * 16
    # The tail windows (depths 13 and 14, the span before each prompt's end at depth 15) rank
    # above every spare level and hold 2 blocks more per path. Ask for half the SWA blocks the
    # windows hold less those: levels 0 and 1 go, on both paths alike.
    held = world.blocks.swa.num_used
    world.cache.reclaim(0, world.blocks.swa.num_free + held // 2 - 4)
    world.check()
    kept = sorted((n.token_ids[0] >= 100, n.depth) for n in world.cache.tree.nodes() if n.window)
    stride = sorted({d for d in range(16) if (d + 1) % 4 == 0} | {13, 14})  # every 2 spans, the tail
    assert kept == [(False, d) for d in stride] + [(True, d) for d in stride]
    assert world.blocks.swa.num_used <= held - held // 2 + 4
    assert windows.dropped  # in level order, checked against the scan at every drop

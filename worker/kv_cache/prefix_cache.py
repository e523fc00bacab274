"""The prefix cache: which blocks the radix tree keeps, in which tier, and how hits resume from them.

The cache holds one reference on every device block it keeps (``BlockPool`` ref counts), so a block a
running sequence also uses is never freed under it. A prompt hits up to the deepest block boundary
``p`` such that the tree has full KV for ``[0, p)`` *and* a retained sliding-window window ending at
``p``; a deeper full-KV match without a window there is counted as a hit cut short.

Tiers: device entries form the top of the tree. Under block pressure the least-recently-used device
entries with no device children move to host memory (then disk, then nowhere); a hit promotes the
entries on its path back to the device, their KV loaded layer by layer during the next step. The
eviction order is kept up to date as entries change (``eviction_queue.py``), not re-scanned. Where
sliding-window windows are retained, and which are dropped when the SWA pool runs short, is
``window_retention.py``.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, replace

from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.cache_stats import CacheStats
from worker.kv_cache.disk_store import DiskEntry, DiskStore
from worker.kv_cache.evicted_hashes import EvictedHashes
from worker.kv_cache.eviction_queue import EvictionQueue
from worker.kv_cache.host_store import HostStore
from worker.kv_cache.kv_sequence import KVSequence
from worker.kv_cache.kv_transfer import KVTransfer, PendingLoad
from worker.kv_cache.lower_tiers import LowerTiers
from worker.kv_cache.prefix_match import MatchStop, PrefixMatch
from worker.kv_cache.radix import Node, RadixTree, Tier, WindowKind
from worker.kv_cache.shared_tier import SharedTier
from worker.kv_cache.window_retention import WindowRetention


@dataclass(frozen=True)
class TakenPrefix:
    """What ``take`` handed a sequence: references on these blocks, one each."""

    match: PrefixMatch  # the hit as taken (shorter than the one asked for when a load failed)
    full_blocks: tuple[int, ...]  # logical blocks [0, n)
    block_hashes: tuple[bytes, ...]
    window: tuple[int, ...]  # SWA blocks of logical blocks [n - len(window), n)


class PrefixCache:
    def __init__(
        self,
        blocks: BlockManager,
        retain_every_tokens: int | None = None,
        transfer: KVTransfer | None = None,
        host: HostStore | None = None,
        disk: DiskStore | None = None,
        opportunistic_windows: bool = True,
        shared: SharedTier | None = None,
    ):
        """``opportunistic_windows`` keeps spare windows at every block boundary while the SWA pool
        has room (``window_retention.py``); off, windows exist only where they were planned.
        ``shared``: the tier all workers share (``shared_tier.py``), None when off."""
        self.blocks = blocks
        self.tree = RadixTree()
        self.windows = WindowRetention(blocks, retain_every_tokens, opportunistic_windows)
        self.transfer = transfer
        self.stats = CacheStats()
        self.needs_window = blocks.window > 0
        self._index: dict[bytes, Node] = {}
        self._evicted = EvictedHashes()  # dropped lately: tells "evicted" from "never cached"
        self._call_start = 0  # tree clock when the current engine call began
        self._eviction = EvictionQueue()  # device entries with no device children, LRU first
        # Lower tiers need the transfer object to copy KV out of and into device blocks.
        self.tiers = (
            LowerTiers(host, disk, self._index, transfer.payload_numel(0), shared)
            if transfer is not None
            else LowerTiers(None, None, {})
        )
        self._load_disk_index()

    # -- lookup ----------------------------------------------------------------------------------
    def _blocks_of(self, seq: KVSequence, num_blocks: int) -> list[tuple[int, ...]]:
        size = self.blocks.block_size
        return [tuple(seq.token_ids[i * size : (i + 1) * size]) for i in range(num_blocks)]

    def match(self, seq: KVSequence) -> PrefixMatch:
        """The deepest hit for ``seq`` (at least one token is left to compute). Read-only."""
        max_blocks = (seq.num_tokens - 1) // self.blocks.block_size
        hashes = self.blocks.hashes_for(seq, max_blocks)
        path = self.tree.walk(hashes, self._blocks_of(seq, max_blocks))
        evicted = self._evicted.run_length(hashes[len(path) :])
        return PrefixMatch.along(path, max_blocks, self.blocks.block_size, self.needs_window, evicted)

    def attach_shared(self, seq: KVSequence) -> int:
        """Where the tree has no entry for ``seq``'s next block, asks the shared tier for it (and the
        blocks after it) and adds what it holds, down to the deepest entry with a window, as
        shared-tier entries (their KV is loaded on ``take``). Only headers whose namespace, parent
        hash and token ids equal what ``seq`` asks for are attached. Returns how many entries."""
        shared = self.tiers.shared
        if shared is None:
            return 0
        max_blocks = (seq.num_tokens - 1) // self.blocks.block_size
        hashes = self.blocks.hashes_for(seq, max_blocks)
        tokens = self._blocks_of(seq, max_blocks)
        path = self.tree.walk(hashes, tokens)
        parent = path[-1] if path else None
        if len(path) == max_blocks or hashes[len(path)] in self.tree.children_of(parent):
            return 0  # nothing past the tree, or a collision with a local entry: leave it
        found: list[DiskEntry] = []
        for i in range(len(path), max_blocks):
            previous = hashes[i - 1] if i else None
            entry = shared.header(DiskEntry(hashes[i], previous, tokens[i], i, 0))
            if entry is None:
                break
            found.append(entry)
        while found and self.needs_window and not found[-1].window_len:
            found.pop()  # a hit ends at a window: entries below the deepest one are of no use yet
        for entry in found:
            parent = self.tree.insert(parent, entry.block_hash, entry.token_ids, None, tier=Tier.SHARED)
            parent.window_len = entry.window_len
            parent.window_kind = WindowKind.PLANNED if entry.window_len else None
            self._index[entry.block_hash] = parent
        return len(found)

    def begin_call(self) -> None:
        """A new engine call (a batch, or a shard of one) starts: hits on entries cached before now
        count as hits from earlier calls."""
        self._call_start = self.tree.now

    def take(self, seq: KVSequence, match: PrefixMatch) -> TakenPrefix:
        """Takes one reference on every block of ``match`` for ``seq`` (a match made just before,
        with the cache unchanged since). Entries on the host or disk are promoted to the device, their
        KV queued for the next step; one that cannot be brought back ends the hit above it."""
        size = self.blocks.block_size
        path = match.nodes
        depth = len(path)
        stamp = self.tree.tick()
        taken = 0
        for i, node in enumerate(path):
            if self._index.get(node.block_hash) is not node:
                break  # dropped while making room for an earlier entry of this path
            if node.tier is not Tier.DEVICE and not self._promote(node, with_window=i == depth - 1):
                break
            if i == depth - 1 and self.needs_window and node.window is None:
                break  # the window itself could not be brought back
            self.blocks.full.retain(node.full_block)
            node.last_access = stamp
            self._eviction.touched(node)
            self.windows.touched(node)
            taken += 1
        if taken < depth:  # fall back to the deepest device entry that still has its window
            keep = taken
            while keep and (path[keep - 1].window is None and self.needs_window):
                keep -= 1
            for node in path[keep:taken]:
                self.blocks.full.release(node.full_block)
            by_tier = {t.value: 0 for t in Tier} | {Tier.DEVICE.value: keep * size}
            match = replace(match, nodes=path[:keep], stop=MatchStop.LOAD_FAILED, tokens_by_tier=by_tier)
            path = match.nodes
        window = path[-1].window if path and self.needs_window else None
        for block in window or ():
            self.blocks.swa.retain(block)
        return TakenPrefix(
            match,
            tuple(node.full_block for node in path),
            tuple(node.block_hash for node in path),
            tuple(window or ()),
        )

    def plan_window(self, node: Node) -> None:
        """Makes the spare window at ``node`` (a hit's end) a planned one: a later prompt is likely to
        resume there too."""
        if self.windows.plan(node):
            self.stats.windows_retained += 1

    def pass_windows(self, seq: KVSequence, match: PrefixMatch) -> None:
        """``seq`` goes on past the leaf its full-KV match ends at (``match.extends_leaf``, as taken:
        the next turn of a conversation), so the windows of its hit that lie where the tree does not
        branch no longer mark where a later prompt is expected to resume: ``seq`` plans its own
        further down. Each keeps only the kind ``seq`` would give that point itself
        (``WindowRetention.kind_at``): planned at its retention points, a message window at its
        message boundaries, else spare, so it is dropped before the windows still ahead of a prompt.
        A prompt that later parts there plans it again (``plan_window``)."""
        for node in match.nodes:
            if node.window is None or len(node.children) > 1:
                continue
            if self.windows.demote(node, self.windows.kind_at(seq, node.end_token)):
                self.stats.windows_passed += 1

    def record_lookup(self, seq: KVSequence, match: PrefixMatch) -> None:
        """Counts one admission's lookup (``match`` as taken) in the cache's stats."""
        earlier = sum(1 for node in match.nodes if node.inserted_at <= self._call_start)
        self.stats.record_lookup(seq.prompt_len, match, earlier * self.blocks.block_size)

    # -- tiers -------------------------------------------------------------------------------------
    def _promote(self, node: Node, with_window: bool) -> bool:
        payload = self.tiers.fetch(node)
        if payload is None or payload.numel() != self.transfer.payload_numel(node.window_len):
            self.stats.failed_loads += 1
            self._drop_subtree(node)
            return False
        window_len = node.window_len if (with_window and self.needs_window) else 0
        if not self._make_room(1, window_len):
            self._store_below(node, payload)  # keep it where it was
            return False
        node.full_block = self.blocks.full.allocate()
        window = tuple(self.blocks.swa.allocate() for _ in range(window_len))
        self.windows.attach(node, window)
        node.tier = Tier.DEVICE
        self._eviction.entered_device(node)
        self.blocks.full.set_hash(node.full_block, node.block_hash)
        self.transfer.schedule_load(PendingLoad(payload, node.full_block, window))
        self.stats.promotions += 1
        return True

    def _make_room(self, full: int, swa: int) -> bool:
        if self.blocks.full.num_free < full or self.blocks.swa.num_free < swa:
            self.reclaim(full, swa)
        return self.blocks.full.num_free >= full and self.blocks.swa.num_free >= swa

    def _demote(self, node: Node) -> None:
        """Moves a device entry (no device children, no other holder) down a tier, or out. A spare
        window goes down with it only to the host, only if it ends at a multiple of the window span
        (so the host never keeps one SWA block twice) and only where the host has room for it
        without pushing anything out; the disk never keeps spare windows (``lower_tiers.py``)."""
        spare = node.window_kind is not None and node.window_kind.is_spare
        if self.tiers.enabled and spare and not self._spare_goes_below(node):
            self.windows.drop(node)
            self.stats.windows_dropped += 1
        payload = self.transfer.save(node.full_block, node.window or ()) if self.tiers.enabled else None
        self._release_device(node)
        self._eviction.left_device(node)
        self.stats.nodes_evicted += 1
        if payload is None or not self._store_below(node, payload):
            self._drop_subtree(node)

    def _spare_goes_below(self, node: Node) -> bool:
        tiles = self.windows.tiles(node)  # ends at a multiple of the span: shares no block
        return tiles and self.tiers.host_has_room(self.transfer.payload_bytes(node.window_len))

    def _store_below(self, node: Node, payload) -> bool:
        stored, lost = self.tiers.store(node, payload)
        for other in lost:
            if other.block_hash in self._index:
                self._drop_subtree(other)
        return stored

    def _release_device(self, node: Node) -> None:
        self.windows.release(node, keep_length=True)
        self.blocks.full.release(node.full_block)
        node.full_block = None

    def _drop_subtree(self, node: Node) -> None:
        for child in list(node.children.values()):
            self._drop_subtree(child)
        if node.tier is Tier.DEVICE and node.full_block is not None:
            self._release_device(node)
            self._eviction.left_device(node)
        self.tiers.discard(node)
        self.tree.remove_leaf(node)
        self._index.pop(node.block_hash, None)
        self._evicted.dropped(node.block_hash)
        self.stats.nodes_dropped += 1

    def _load_disk_index(self) -> None:
        for entry in sorted(self.tiers.disk_entries(), key=lambda e: e.depth):
            parent = self._index.get(entry.parent_hash) if entry.parent_hash else None
            if (entry.parent_hash and parent is None) or entry.block_hash in self._index:
                continue
            node = self.tree.insert(parent, entry.block_hash, entry.token_ids, None, tier=Tier.DISK)
            node.window_len = entry.window_len
            node.window_kind = WindowKind.PLANNED if entry.window_len else None
            self._index[entry.block_hash] = node

    def persist(self) -> int:
        """Writes every device and host entry to the disk tier (at shutdown); returns how many."""
        return self.tiers.persist(
            list(self.tree.nodes()), lambda node: self.transfer.save(node.full_block, node.window or ())
        )

    def publish_call(self) -> int:
        """Publishes the device entries the current engine call inserted to the shared tier (if
        on), so other workers find the prefixes this one just computed; returns how many."""
        if self.tiers.shared is None:
            return 0
        new = [node for node in self.tree.nodes() if node.inserted_at > self._call_start]
        return self.tiers.publish(new, lambda node: self.transfer.save(node.full_block, node.window or ()))

    # -- insertion ---------------------------------------------------------------------------------
    def cache_computed(self, seq: KVSequence, previous_computed: int) -> None:
        """Adds ``seq``'s newly completed full blocks to the tree and retains windows it just passed.

        Call after a step, before the sequence's dead SWA blocks are released (``KVCacheManager.advance``).
        """
        size = self.blocks.block_size
        num_complete = seq.num_computed_tokens // size
        if num_complete == 0:
            return
        path = self.tree.walk(seq.block_hashes[:num_complete], self._blocks_of(seq, num_complete))
        parent = path[-1] if path else None
        if parent is not None and parent.tier is not Tier.DEVICE:
            return  # an evicted entry on the way: leave the path as it is
        for i in range(len(path), num_complete):
            if seq.block_hashes[i] in self.tree.children_of(parent):
                break  # same hash, other tokens (a collision) or an evicted twin: stop here
            self.blocks.full.retain(seq.full_blocks[i])
            parent = self.tree.insert(
                parent,
                seq.block_hashes[i],
                tuple(seq.token_ids[i * size : (i + 1) * size]),
                seq.full_blocks[i],
            )
            self._index[parent.block_hash] = parent
            self._evicted.cached(parent.block_hash)
            self._eviction.entered_device(parent)
            path.append(parent)
        retained = self.windows.retain_passed(seq, previous_computed, path)
        self.stats.windows_retained += retained[WindowKind.PLANNED] + retained[WindowKind.MESSAGE]
        self.stats.spare_windows_retained += retained[WindowKind.SPARE] + retained[WindowKind.TAIL]

    # -- eviction ----------------------------------------------------------------------------------
    def reclaim(self, full_needed: int, swa_needed: int) -> None:
        """Drops retained windows, then evicts device entries, least recently used first, until the
        pools have the blocks asked for (or nothing only the cache holds is left). Evicted entries move
        to the host or disk tier if enabled."""
        if swa_needed > self.blocks.swa.num_free:
            self.stats.windows_dropped += self.windows.drop_least_recent(swa_needed)
        if full_needed > self.blocks.full.num_free:
            self._evict_leaves(full_needed)

    def _evict_leaves(self, full_needed: int) -> None:
        # Least recently used first among device entries with no device children that only the
        # cache holds; demoting one may make its parent such an entry, considered in its turn.
        ref_counts = self.blocks.full.ref_counts

        def only_cached(node: Node) -> bool:
            return ref_counts[node.full_block] == 1

        with closing(self._eviction.least_recent(only_cached)) as victims:
            while self.blocks.full.num_free < full_needed:
                node = next(victims, None)
                if node is None:
                    return
                self._demote(node)

    def demote_all(self) -> None:
        """Moves every device entry no sequence uses down a tier (benchmarks and tests of the tiers)."""
        self._evict_leaves(self.blocks.full.num_blocks + 1)

    # -- accounting --------------------------------------------------------------------------------
    def num_entries(self, tier: Tier) -> int:
        return sum(1 for n in self.tree.nodes() if n.tier is tier)

    def held_blocks(self, include_spare: bool = True) -> tuple[dict[int, int], dict[int, int]]:
        """References the cache holds, per full block and per SWA block (``include_spare=False``:
        leaving out those of spare windows)."""
        full: dict[int, int] = {}
        swa: dict[int, int] = {}
        for node in self.tree.nodes():
            if node.full_block is not None:
                full[node.full_block] = full.get(node.full_block, 0) + 1
            if include_spare or node.window_kind is None or not node.window_kind.is_spare:
                for block in node.window or ():
                    swa[block] = swa.get(block, 0) + 1
        return full, swa

    def device_bytes(self, include_spare: bool = True) -> int:
        """Bytes of device KV the cache keeps (each distinct block once). ``include_spare=False``:
        without the blocks only spare windows hold, which the cache gives up first under pressure
        (its footprint once memory binds)."""
        if self.transfer is None:
            return 0
        full, swa = self.held_blocks(include_spare)
        full_bytes = self.transfer.payload_bytes(0)
        return len(full) * full_bytes + len(swa) * (self.transfer.payload_bytes(1) - full_bytes)

    def check_integrity(self) -> None:
        self.tree.check_integrity()
        full, swa = self.held_blocks()
        for block, refs in full.items():
            if self.blocks.full.ref_counts[block] < refs:
                raise AssertionError(f"full block {block}: cache holds {refs} refs, pool counts fewer")
        for block, refs in swa.items():
            if self.blocks.swa.ref_counts[block] < refs:
                raise AssertionError(f"swa block {block}: cache holds {refs} refs, pool counts fewer")
        nodes = list(self.tree.nodes())
        if {n.block_hash for n in nodes} != set(self._index) or any(
            self._index[n.block_hash] is not n for n in nodes
        ):
            raise AssertionError("hash index out of step with the tree")
        for node in nodes:
            if node.tier is Tier.DEVICE and self.blocks.full.hashes.get(node.full_block) != node.block_hash:
                raise AssertionError(f"cached block {node.full_block} lost its hash")
        self.tiers.check_integrity(nodes)
        self._eviction.check_integrity(nodes)
        self.windows.check_integrity(nodes)

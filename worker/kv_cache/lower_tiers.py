"""Host memory, then local disk, then the shared tier: where entries evicted from the device keep
their KV payloads.

The tiers hold flat payloads (``kv_transfer.py``) keyed by block hash and keep each tree
node's ``tier`` up to date. The host tier is LRU under its budget; entries it pushes out move on to
the disk, and entries that fit nowhere are reported so the cache can drop them (and their subtrees).

Spare windows (``window_retention.py``) never reach the disk: an entry written there with one goes
without it. A hit reads every entry of its path from disk but only the last one's window, so disk
entries with windows at every block would multiply what a hit reads.

The shared tier (``shared_tier.py``: a directory or a bucket, optional) is written through: an entry
that moves to the disk, or is persisted there, is also published to the shared store (as the disk
keeps it). An entry that fits in no local tier stays in the tree as a shared-tier entry when the
shared store holds it; a disk entry that cannot be read back is loaded from the shared store
instead when it is there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from worker.kv_cache.disk_store import DiskEntry, DiskStore
from worker.kv_cache.host_store import HostStore
from worker.kv_cache.radix import Node, Tier
from worker.kv_cache.shared_tier import SharedTier


def _disk_entry(node: Node, window_len: int) -> DiskEntry:
    parent = node.parent.block_hash if node.parent is not None else None
    return DiskEntry(node.block_hash, parent, node.token_ids, node.depth, window_len)


class LowerTiers:
    def __init__(
        self,
        host: HostStore | None,
        disk: DiskStore | None,
        index: dict[bytes, Node],
        bare_numel: int = 0,
        shared: SharedTier | None = None,
    ):
        """``index`` maps block hashes to tree nodes (shared with the cache); disabled stores are off.
        ``bare_numel``: elements of a payload without a window (the full-attention part comes first)."""
        self.host = host if host is not None and host.enabled else None
        self.disk = disk if disk is not None and disk.enabled else None
        self.shared = shared
        self.index = index
        self.bare_numel = bare_numel

    @property
    def enabled(self) -> bool:
        return self.host is not None or self.disk is not None or self.shared is not None

    def host_has_room(self, num_bytes: int) -> bool:
        """Whether a payload of ``num_bytes`` fits the host tier without pushing anything out."""
        host = self.host
        return host is not None and host.num_bytes + num_bytes <= host.budget_bytes

    def _for_disk(self, node: Node, payload: torch.Tensor) -> tuple[DiskEntry, torch.Tensor]:
        if node.window_kind is not None and node.window_kind.is_spare and node.window_len:
            return _disk_entry(node, 0), payload[: self.bare_numel]
        return _disk_entry(node, node.window_len), payload

    def fetch(self, node: Node) -> torch.Tensor | None:
        """Takes ``node``'s payload out of its tier (None when it is gone or unreadable)."""
        payload = self.host.take(node.block_hash) if self.host is not None else None
        if payload is None and self.disk is not None and node.tier is Tier.DISK:
            payload = self.disk.load(node.block_hash)
            if payload is not None:
                self.disk.discard(node.block_hash)
        if payload is None and self.shared is not None and node.tier in (Tier.DISK, Tier.SHARED):
            payload = self.shared.load(_disk_entry(node, node.window_len))
        return payload

    def store(self, node: Node, payload: torch.Tensor) -> tuple[bool, list[Node]]:
        """Keeps ``payload`` on the host (older host entries spill to disk) or else on disk.

        Returns whether ``node`` was stored, and the other nodes that were pushed out of every tier.
        """
        lost: list[Node] = []
        if self.host is not None:
            for key, pushed in self.host.put(node.block_hash, payload):
                if key == node.block_hash:
                    continue  # did not fit on the host at all: try the disk below
                other = self.index[key]
                if not self._to_disk(other, pushed):
                    lost.append(other)
            if node.block_hash in self.host:
                node.tier = Tier.HOST
                return True, lost
        return self._to_disk(node, payload), lost

    def _to_disk(self, node: Node, payload: torch.Tensor) -> bool:
        if self.disk is None and self.shared is None:
            return False
        entry, payload = self._for_disk(node, payload)
        published = self.shared is not None and self.shared.put(entry, payload)
        if self.disk is not None and self.disk.put(entry, payload):
            node.tier = Tier.DISK
        elif published:
            node.tier = Tier.SHARED
        else:
            return False
        if entry.window_len != node.window_len:  # a spare window stayed behind
            node.window_len, node.window_kind, node.window_dropped = 0, None, True
        return True

    def discard(self, node: Node) -> None:
        if self.host is not None:
            self.host.discard(node.block_hash)
        if self.disk is not None and node.tier is Tier.DISK:
            self.disk.discard(node.block_hash)

    def disk_entries(self) -> list[DiskEntry]:
        return self.disk.entries() if self.disk is not None else []

    def spill_host_to_disk(self, nodes: list[Node]) -> None:
        """Moves every host entry among ``nodes`` to the disk (benchmarks of the disk tier)."""
        for node in nodes:
            if node.tier is Tier.HOST and self.host is not None:
                payload = self.host.take(node.block_hash)
                if not self._to_disk(node, payload):
                    self.host.put(node.block_hash, payload)

    def persist(self, nodes: list[Node], save: Callable[[Node], torch.Tensor]) -> int:
        """Writes device entries (``save`` copies them out) and host entries to disk, and publishes
        them to the shared tier; returns how many reached the disk. Host entries move to the disk
        (they stay on the host when there is no disk tier)."""
        if self.disk is None and self.shared is None:
            return 0
        written = 0
        for node in sorted(nodes, key=lambda n: n.depth):
            if node.tier is Tier.DEVICE:
                entry, payload = self._for_disk(node, save(node))
            elif node.tier is Tier.HOST:
                whole = self.host.take(node.block_hash)
                entry, payload = self._for_disk(node, whole)
            else:
                continue
            if self.shared is not None:
                self.shared.put(entry, payload)
            stored = self.disk is not None and self.disk.put(entry, payload)
            written += stored
            if node.tier is Tier.HOST:
                if stored:
                    node.tier = Tier.DISK
                    if entry.window_len != node.window_len:
                        node.window_len, node.window_kind, node.window_dropped = 0, None, True
                else:
                    self.host.put(node.block_hash, whole)
        return written

    def publish(self, nodes: list[Node], save: Callable[[Node], torch.Tensor]) -> int:
        """Publishes device entries (``save`` copies them out) to the shared tier, parents first,
        as the disk would keep them; returns how many were written. Their tiers do not change."""
        if self.shared is None or not self.shared.writable:
            return 0  # (a write that failed turned writes off: no more lookups to skip them)
        written = 0
        for node in sorted(nodes, key=lambda n: n.depth):
            if node.tier is Tier.DEVICE and node.block_hash not in self.shared:
                written += self.shared.put(*self._for_disk(node, save(node)))
        return written

    def check_integrity(self, nodes: list[Node]) -> None:
        for node in nodes:
            if node.tier is Tier.HOST and (self.host is None or node.block_hash not in self.host):
                raise AssertionError("host entry missing from the host tier")
            if node.tier is Tier.SHARED and (node.full_block is not None or node.window is not None):
                raise AssertionError("shared-tier entry holds device blocks")
        if self.host is not None:
            self.host.check_integrity()

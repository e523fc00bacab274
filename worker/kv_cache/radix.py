"""A radix tree over KV blocks, keyed by chained block hashes. Holds block ids, never tensors.

Each node is one block of ``block_size`` tokens at depth ``d`` (tokens ``[d*B, (d+1)*B)``). Its
*full* component is the full-attention block holding those tokens' KV (always present while the node
lives on the device). Its *window* component is optional: the sliding-window blocks covering the last
``W - 1`` tokens before ``(d+1)*B``, which is exactly what a computation resuming at ``(d+1)*B`` reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum


class Tier(Enum):
    DEVICE = "device"
    HOST = "host"
    DISK = "disk"
    SHARED = "shared"  # only in the store all workers share (``shared_store.py``)


class WindowKind(Enum):
    """Why an entry keeps a sliding-window window (``window_retention.py``); spare ones go first."""

    PLANNED = "planned"  # prompt end, branch point, divergence, every N tokens
    MESSAGE = "message"  # a chat message boundary: dropped after spare windows, before planned ones
    # A spare window within one window span before a plain prompt's end, where a later prompt that
    # shares all of it but its last part parts (another question on the same document): dropped
    # with the planned ones, least recently used first.
    TAIL = "tail"
    SPARE = "spare"  # left behind by a sequence's sliding window while the SWA pool has room

    @property
    def is_spare(self) -> bool:
        """Kept only while the SWA pool has room (spare or tail): never the disk's, nor the footprint's."""
        return self in (WindowKind.SPARE, WindowKind.TAIL)


@dataclass(eq=False)
class Node:
    block_hash: bytes
    token_ids: tuple[int, ...]
    depth: int
    parent: Node | None
    full_block: int | None  # the device block; None when the entry lives on the host or disk
    window: tuple[int, ...] | None = None  # device SWA blocks of logical blocks [depth + 1 - len, depth]
    window_len: int = 0  # blocks of the retained window in whichever tier holds the entry (0: none)
    window_kind: WindowKind | None = None  # set exactly when window_len > 0
    window_dropped: bool = False  # a window retained here was dropped under pressure (none since)
    tier: Tier = Tier.DEVICE
    children: dict[bytes, Node] = field(default_factory=dict)
    last_access: int = 0
    inserted_at: int = 0  # the access stamp it was inserted with

    @property
    def end_token(self) -> int:
        """Token position right after this block: where a computation resumes on a hit here."""
        return (self.depth + 1) * len(self.token_ids)

    @property
    def is_leaf(self) -> bool:
        return not self.children


class RadixTree:
    def __init__(self):
        self.root_children: dict[bytes, Node] = {}
        self.num_nodes = 0
        self._clock = 0

    @property
    def now(self) -> int:
        """The latest access stamp handed out (stamps after it are newer)."""
        return self._clock

    def tick(self) -> int:
        """A new access stamp. Each goes to one new node (``insert``) or to the nodes of one hit path,
        so nodes that share a stamp lie on one root path (the window drop order relies on it)."""
        self._clock += 1
        return self._clock

    def children_of(self, node: Node | None) -> dict[bytes, Node]:
        return self.root_children if node is None else node.children

    def walk(self, block_hashes: list[bytes], blocks_of_tokens: list[tuple[int, ...]]) -> list[Node]:
        """Nodes along a prefix, stopping at the first missing hash or token mismatch (hash collision)."""
        path: list[Node] = []
        children = self.root_children
        for block_hash, tokens in zip(block_hashes, blocks_of_tokens, strict=False):
            node = children.get(block_hash)
            if node is None or node.token_ids != tokens:
                break
            path.append(node)
            children = node.children
        return path

    def insert(
        self,
        parent: Node | None,
        block_hash: bytes,
        token_ids: tuple[int, ...],
        full_block: int | None,
        tier: Tier = Tier.DEVICE,
    ) -> Node:
        siblings = self.children_of(parent)
        if block_hash in siblings:
            raise ValueError("node already present")
        depth = 0 if parent is None else parent.depth + 1
        stamp = self.tick()
        node = Node(
            block_hash, token_ids, depth, parent, full_block, tier=tier, last_access=stamp, inserted_at=stamp
        )
        siblings[block_hash] = node
        self.num_nodes += 1
        return node

    def remove_leaf(self, node: Node) -> None:
        if not node.is_leaf:
            raise ValueError("only leaves can be removed")
        del self.children_of(node.parent)[node.block_hash]
        self.num_nodes -= 1

    def nodes(self) -> Iterator[Node]:
        stack = list(self.root_children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def check_integrity(self) -> None:
        count = 0
        for node in self.nodes():
            count += 1
            expected_depth = 0 if node.parent is None else node.parent.depth + 1
            if node.depth != expected_depth:
                raise AssertionError(f"node at depth {node.depth} under a parent at depth {expected_depth}")
            if self.children_of(node.parent).get(node.block_hash) is not node:
                raise AssertionError("node is not registered under its parent")
            if node.window is not None and not 0 < len(node.window) <= node.depth + 1:
                raise AssertionError(f"window of {len(node.window)} blocks at depth {node.depth}")
            on_device = node.tier is Tier.DEVICE
            if on_device != (node.full_block is not None) or (node.window is not None and not on_device):
                raise AssertionError(
                    f"{node.tier.value} node holds device blocks {node.full_block}, {node.window}"
                )
            if node.window is not None and len(node.window) != node.window_len:
                raise AssertionError("window length out of date")
            if (node.window_kind is None) != (node.window_len == 0):
                raise AssertionError(
                    f"window kind {node.window_kind} with a window of {node.window_len} blocks"
                )
            if on_device and node.parent is not None and node.parent.tier is not Tier.DEVICE:
                raise AssertionError("a device node under an evicted parent")
        if count != self.num_nodes:
            raise AssertionError(f"tree has {count} nodes but counts {self.num_nodes}")

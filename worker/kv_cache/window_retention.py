"""Which prefix-cache entries keep a sliding-window window, and which windows go first under pressure.

An entry's window component is the SWA blocks a computation resuming at the entry's end reads (the
last ``W - 1`` tokens, page-aligned). Four kinds (``WindowKind``):

- *planned* windows, where a later prompt is expected to resume: the end of every prompt (its last
  full block), the branch points the planner found and the other points a sequence carries in
  ``retain_at`` (where a prompt diverged from a cached path), and every ``retain_every_tokens``
  tokens if set;
- *message* windows at a chat's message boundaries (``message_boundaries``): planned too, but they
  pay off only where a conversation branches (a growing one resumes at its last prompt's end), so
  they are dropped before the other planned ones;
- *spare* windows (``opportunistic=True``): at every other block boundary a sequence passes. They
  cost one SWA block each, not a window's worth: the windows ending at consecutive boundaries share
  all but one block, and the blocks are the ones the sequence's window leaves behind as it slides,
  which would otherwise be freed. So with SWA memory to spare every block boundary hits, as in
  vLLM and SGLang;
- *tail* windows: the spare windows at the ``S`` block boundaries before a plain prompt's end
  (``S`` the window's span, below), where a later prompt that shares all of this one but its last
  part parts from it (the next question on the same document). Together they cost one span of
  blocks more than the prompt end's window, and they rank with the planned windows, so that prompt
  resumes exactly where it parts instead of a thinned stride above (vLLM keeps a prompt's tail by
  the order it frees blocks in). Ranked below the planned ones (as they were first), they went
  before the planned end of every unshared prompt and lost most documents' second questions once
  traffic that is never repeated filled the SWA pool (docs/performance.md). A chat prompt has no
  tail windows: its message boundaries already mark where a later prompt parts (message windows).

A window a later prompt goes past loses its rank: a prompt whose full-KV match ends at a leaf of the
tree extends a cached prompt (the next turn of a conversation) and plans its own window further
down, so the windows of its hit where the tree does not branch keep only the kind that prompt gives
those points itself (``kind_at``: a message window at its message boundaries, else spare). A growing
conversation so holds one planned window, at its latest prompt's end, instead of one per turn (each
recently used, together crowding out the only window of a chat that waits), as vLLM frees the
blocks that leave a request's window first (``PrefixCache.pass_windows``). A prompt that later
parts at such a window plans it again.

When the SWA pool runs short, spare windows are dropped first, then message windows, and planned
and tail ones (least recently used first among both) only once no other window is left: under pressure the cache falls back to the planned windows, never below them. Spare
windows go by *level*, then least recently used first. Let a window's span ``S`` be its length
(``ceil((W - 1) / B)`` blocks): windows ending at multiples of ``S`` tile a path without sharing a
block, the others overlap them. Level 0 is a window ending off those multiples; level ``k + 1`` one
ending at ``S * m`` with ``2^k`` the largest power of two dividing ``m``. Dropping level by level
thins every cached path at once: first to one window per span (the same SWA memory, finer hits
gone), then to one per 2, 4, 8 spans (each step halves the memory), so a prompt leaving a cached
path anywhere still resumes within the current stride of that point, instead of LRU order emptying
old paths whole while new ones keep a window at every block. A dropped window's entry keeps its full component, so a later hit
resumes at the deepest window above it (counted as cut short). When an entry moves down a tier, a
planned window goes with it; a spare one only if the tier has room for it without pushing anything
out (``PrefixCache._demote``).

The drop order is kept up to date instead of re-scanned: the holders of each drop rank (a spare
level, or planned) wait in a heap keyed ``(last_access, depth)``, which the cache updates as windows are retained, attached, released and
their entries hit (``touched``), so dropping a window costs O(log n). The depth breaks ties exactly
as the former scan did (a sort of the tree's pre-order traversal by ``last_access``, ties in
traversal order): an access stamp goes to one new entry or to the entries of one hit path, so
entries that share one lie on a single root path, where the traversal meets the shallower first.
The heaps are ``NodeHeap``s (lazy deletion).

Holds block ids, never tensors; the cache holds one SWA-pool reference on every block of a window.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_sequence import KVSequence
from worker.kv_cache.node_heap import NodeHeap
from worker.kv_cache.radix import Node, Tier, WindowKind

PLANNED_RANK = 64  # above every spare level: planned (and tail) windows are dropped last
MESSAGE_RANK = PLANNED_RANK - 1
# A window of one kind retained where one of a lower kind is becomes that kind.
_KIND_ORDER = {WindowKind.SPARE: 0, WindowKind.MESSAGE: 1, WindowKind.TAIL: 2, WindowKind.PLANNED: 3}


class WindowRetention:
    def __init__(
        self, blocks: BlockManager, retain_every_tokens: int | None = None, opportunistic: bool = True
    ):
        self.blocks = blocks
        self.retain_every_tokens = retain_every_tokens
        self.opportunistic = opportunistic
        self.needs_window = blocks.window > 0
        # Blocks a window spans (``S``): windows ending at multiples of it share no block.
        self.span_blocks = max(1, -(-(blocks.window - 1) // blocks.block_size)) if blocks.window else 1
        # The entries holding a window, one heap per drop rank (``drop_rank``), lowest dropped first.
        self._holders: dict[int, NodeHeap] = {}

    def drop_rank(self, node: Node) -> int:
        """Where ``node``'s window stands in the drop order: its spare level, ``MESSAGE_RANK`` or
        ``PLANNED_RANK`` (planned and tail windows)."""
        if node.window_kind in (WindowKind.PLANNED, WindowKind.TAIL):
            return PLANNED_RANK
        if node.window_kind is WindowKind.MESSAGE:
            return MESSAGE_RANK
        spans, rest = divmod(node.depth + 1, self.span_blocks)
        if rest:
            return 0
        return min(1 + ((spans & -spans).bit_length() - 1), MESSAGE_RANK - 1)

    def tiles(self, node: Node) -> bool:
        """Whether ``node``'s window ends at a multiple of the span: it shares no block with the
        other windows that do."""
        return (node.depth + 1) % self.span_blocks == 0

    def _heap(self, rank: int) -> NodeHeap:
        heap = self._holders.get(rank)
        if heap is None:
            heap = self._holders[rank] = NodeHeap(tie_break=lambda node: node.depth)
        return heap

    def retain_passed(
        self, seq: KVSequence, previous_computed: int, path: list[Node]
    ) -> dict[WindowKind, int]:
        """Retains the windows ``seq`` passed since ``previous_computed`` on ``path`` (its nodes from
        the root): planned ones at its retention points, spare ones at the other block boundaries.
        Returns how many of each kind. Call before ``seq``'s dead SWA blocks are released: the
        window's blocks are taken from the sequence, one more reference each."""
        size = self.blocks.block_size
        retained = dict.fromkeys(WindowKind, 0)
        if not self.needs_window:
            return retained
        planned = self._retention_points(seq, previous_computed)
        lo, hi = previous_computed, seq.num_computed_tokens
        messages = {p for p in seq.message_boundaries if lo < p <= hi and p > 0 and p % size == 0}
        spare = range((lo // size + 1) * size, hi + 1, size) if self.opportunistic else ()
        for end_token in sorted(planned.union(messages, spare)):
            depth = end_token // size - 1
            if depth < len(path) and path[depth].tier is Tier.DEVICE:
                kind = self.kind_at(seq, end_token)
                if self._retain(seq, path[depth], kind):
                    retained[kind] += 1
        return retained

    def _retention_points(self, seq: KVSequence, previous_computed: int) -> set[int]:
        size = self.blocks.block_size
        lo, hi = previous_computed, seq.num_computed_tokens
        points = {p for p in seq.retain_at if lo < p <= hi}
        prompt_end = seq.prompt_len // size * size
        if lo < prompt_end <= hi:
            points.add(prompt_end)
        step = self._every_step()
        if step:
            points.update(range((lo // step + 1) * step, hi + 1, step))
        return {p for p in points if p > 0 and p % size == 0}

    def _every_step(self) -> int | None:
        if not self.retain_every_tokens:
            return None
        size = self.blocks.block_size
        return max(size, self.retain_every_tokens // size * size)

    def kind_at(self, seq: KVSequence, end_token: int) -> WindowKind:
        """The kind of window ``seq`` itself retains at block boundary ``end_token`` as it computes
        past it (``retain_passed``): planned at its retention points, a message window at its
        message boundaries, a tail window in the span before a plain prompt's end, else spare."""
        step = self._every_step()
        if (
            end_token in seq.retain_at
            or end_token == seq.prompt_len // self.blocks.block_size * self.blocks.block_size
            or (step is not None and end_token % step == 0)
        ):
            return WindowKind.PLANNED
        if end_token in seq.message_boundaries:
            return WindowKind.MESSAGE
        # A chat prompt's message boundaries mark where a later prompt parts from it (a message
        # window); a plain prompt has no such mark, so the span before its end keeps tail windows.
        tail = not seq.message_boundaries and self._in_tail(seq, end_token)
        return WindowKind.TAIL if tail else WindowKind.SPARE

    def _in_tail(self, seq: KVSequence, end_token: int) -> bool:
        # The span of block boundaries before the prompt's end: [end - S*B, end). A window ending
        # at end - j*B shares all but j of its blocks with the prompt end's, so the whole tail costs
        # one span of blocks more.
        size = self.blocks.block_size
        prompt_end = seq.prompt_len // size * size
        return prompt_end - self.span_blocks * size <= end_token < prompt_end

    def _retain(self, seq: KVSequence, node: Node, kind: WindowKind) -> bool:
        if node.window is not None:
            return self.plan(node, kind)
        first = self.blocks.first_live_swa_block(node.end_token)
        if first < seq.swa_first_block:
            return False  # the sequence no longer holds that window (cannot happen when called in time)
        window = tuple(seq.swa_blocks[first - seq.swa_first_block : node.depth + 1 - seq.swa_first_block])
        for block in window:
            self.blocks.swa.retain(block)
        node.window = window
        node.window_len = len(window)
        node.window_kind = kind
        node.window_dropped = False
        self._heap(self.drop_rank(node)).push(node)
        return True

    def plan(self, node: Node, kind: WindowKind = WindowKind.PLANNED) -> bool:
        """Raises ``node``'s window (on the device) to ``kind`` if that ranks above its own (spare <
        message < tail < planned); True if it changed."""
        if node.window is None or _KIND_ORDER[kind] <= _KIND_ORDER[node.window_kind]:
            return False
        self._heap(self.drop_rank(node)).discard(node)
        node.window_kind = kind
        self._heap(self.drop_rank(node)).push(node)
        return True

    def demote(self, node: Node, kind: WindowKind) -> bool:
        """Lowers ``node``'s window (on the device) to ``kind`` if that ranks below its own; True if
        it changed. For a window a later prompt has passed (``PrefixCache.pass_windows``)."""
        if node.window is None or _KIND_ORDER[kind] >= _KIND_ORDER[node.window_kind]:
            return False
        self._heap(self.drop_rank(node)).discard(node)
        node.window_kind = kind
        self._heap(self.drop_rank(node)).push(node)
        return True

    def attach(self, node: Node, window: tuple[int, ...]) -> None:
        """Gives ``node`` (just promoted to the device) the SWA blocks its window was loaded into,
        already allocated for the cache, of the kind it had below; an empty ``window`` leaves it
        without one."""
        node.window = window or None
        node.window_len = len(window)
        if not window:
            node.window_kind = None
            return
        node.window_kind = node.window_kind or WindowKind.PLANNED  # an entry read back from disk
        self._heap(self.drop_rank(node)).push(node)

    def release(self, node: Node, keep_length: bool = False) -> None:
        """Returns ``node``'s window blocks to the SWA pool. ``keep_length`` keeps ``window_len`` and
        the kind: the window moves down a tier with its entry instead of being dropped."""
        for block in node.window or ():
            self.blocks.swa.release(block)
        if node.window_kind is not None:
            self._heap(self.drop_rank(node)).discard(node)
        node.window = None
        if not keep_length:
            node.window_len = 0
            node.window_kind = None

    def drop(self, node: Node) -> None:
        """Drops ``node``'s window for good (under pressure): later hits resume above it."""
        self.release(node)
        node.window_dropped = True

    def touched(self, node: Node) -> None:
        """``node.last_access`` changed: a window holder moves to its new place in the drop order."""
        if node.window is not None:
            self._heap(self.drop_rank(node)).touched(node)

    def drop_least_recent(self, swa_needed: int) -> int:
        """Drops retained windows, spare ones first by level, then message windows, planned and tail
        ones last, each rank least recently used first, until ``swa_needed`` SWA blocks are free or none is left; returns how
        many were dropped. A window another window or a running sequence shares frees no block, but
        is dropped all the same."""
        dropped = 0
        for rank in sorted(self._holders):
            holders = self._holders[rank].least_recent()
            try:
                for node in holders:
                    if self.blocks.swa.num_free >= swa_needed:
                        return dropped
                    self._drop(node)
                    dropped += 1
            finally:
                holders.close()
        return dropped

    def _drop(self, node: Node) -> None:
        self.drop(node)

    def check_integrity(self, nodes: Iterable[Node]) -> None:
        """The drop order agrees with a full scan of ``nodes`` (the whole tree): the same holders of
        each kind, the same keys, and holders that share an access stamp on one root path (so depth
        orders them as the tree's traversal does)."""
        holders = [node for node in nodes if node.window]
        for rank in {self.drop_rank(n) for n in holders} | set(self._holders):
            expected = [n for n in holders if self.drop_rank(n) == rank]
            self._heap(rank).check_integrity(expected, f"drop rank {rank}")
        by_stamp: dict[int, list[Node]] = {}
        for node in holders:
            by_stamp.setdefault(node.last_access, []).append(node)
        for same in by_stamp.values():
            same.sort(key=lambda n: n.depth)
            for upper, lower in itertools.pairwise(same):
                ancestor = lower
                while ancestor is not None and ancestor.depth > upper.depth:
                    ancestor = ancestor.parent
                if ancestor is not upper:
                    raise AssertionError(
                        f"windows at depths {upper.depth}, {lower.depth} share a stamp off one path"
                    )

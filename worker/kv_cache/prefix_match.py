"""A prefix-cache lookup's result: the entries a prompt can resume from, and why the hit stops there."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from worker.kv_cache.radix import Node, Tier


class MatchStop(Enum):
    """Why a hit is no deeper than it is."""

    PROMPT_END = "prompt_end"  # it covers every block before the prompt's last token
    DIVERGED = "diverged"  # the cache holds nothing further along this prompt, and never did lately
    EVICTED = "evicted"  # the cache held the next blocks of this prompt and dropped them
    NO_WINDOW = "no_window"  # full KV goes deeper, but no window was ever retained down there
    WINDOW_DROPPED = "window_dropped"  # full KV goes deeper; a window there was dropped under pressure
    LOAD_FAILED = (
        "load_failed"  # an entry on the host, disk or shared tier could not be brought back (``take``)
    )


# Why a hit came out shorter than the cache once allowed, as the metrics count it.
SHORT_REASONS = ("missing_window", "eviction", "tier")
_SHORT_REASON = {
    MatchStop.NO_WINDOW: "missing_window",
    MatchStop.WINDOW_DROPPED: "eviction",
    MatchStop.EVICTED: "eviction",
    MatchStop.LOAD_FAILED: "tier",
}


@dataclass(frozen=True)
class PrefixMatch:
    """``nodes`` are the cache entries of the hit, root first: a prompt resumes at their end.

    Read-only: making one changes nothing in the cache. ``KVCacheManager.admit`` takes it, which is
    only valid while the cache is unchanged since the match was made.
    """

    nodes: tuple[Node, ...]
    matched_tokens: int  # tokens of the deepest full-KV match, with or without a window at its end
    stop: MatchStop
    block_size: int
    tokens_by_tier: dict[str, int]  # hit tokens by the tier each entry was in when matched
    # Where the prompt leaves a cached path (the end of its full-KV match, before its last block
    # boundary); None when it matches nothing, follows the cache to its end, or was evicted there.
    diverges_at: int | None
    evicted_tokens: int = 0  # tokens right after the full-KV match that the cache held and dropped
    # The prompt diverges where the full-KV match ends at a leaf of the tree: it extends a cached
    # prompt (the next turn of a conversation) rather than parting from one.
    extends_leaf: bool = False

    @classmethod
    def along(
        cls, path: list[Node], max_blocks: int, block_size: int, needs_window: bool, evicted_blocks: int
    ) -> PrefixMatch:
        """The match along ``path`` (the tree's nodes matching the prompt's first blocks, of at most
        ``max_blocks``): it ends at the deepest node a computation can resume from. ``evicted_blocks``
        counts the prompt's blocks right after ``path`` that the cache dropped lately."""
        depth = len(path)
        while depth and needs_window and not path[depth - 1].window_len:
            depth -= 1
        if depth == max_blocks:
            stop = MatchStop.PROMPT_END
        elif depth == len(path):
            stop = MatchStop.EVICTED if evicted_blocks else MatchStop.DIVERGED
        elif any(node.window_dropped for node in path[depth:]):
            stop = MatchStop.WINDOW_DROPPED
        else:
            stop = MatchStop.NO_WINDOW
        diverges = 0 < len(path) < max_blocks and not evicted_blocks
        by_tier = {t.value: 0 for t in Tier}
        for node in path[:depth]:
            by_tier[node.tier.value] += block_size
        return cls(
            tuple(path[:depth]),
            len(path) * block_size,
            stop,
            block_size,
            by_tier,
            len(path) * block_size if diverges else None,
            evicted_blocks * block_size,
            diverges and path[-1].is_leaf,
        )

    @property
    def num_cached_tokens(self) -> int:
        return len(self.nodes) * self.block_size

    @property
    def cut_short_tokens(self) -> int:
        """Matched full KV beyond the hit, which had no window to resume from."""
        return self.matched_tokens - self.num_cached_tokens

    @property
    def short_reason(self) -> str | None:
        """Why the hit is shorter than the cache once allowed (``SHORT_REASONS``); None if it is not."""
        if not self.lost_tokens:
            return None
        if self.evicted_tokens and self.stop is MatchStop.NO_WINDOW:
            return "eviction"  # deeper KV was cached and dropped: with it, a window might be there
        return _SHORT_REASON.get(self.stop)

    @property
    def lost_tokens(self) -> int:
        """Tokens the hit would also have covered: deeper full KV without a window, or evicted KV."""
        return self.cut_short_tokens + self.evicted_tokens

    @property
    def tier(self) -> Tier | None:
        """The slowest tier the hit is served from (None: no hit)."""
        return next(
            (t for t in (Tier.SHARED, Tier.DISK, Tier.HOST, Tier.DEVICE) if self.tokens_by_tier[t.value]),
            None,
        )

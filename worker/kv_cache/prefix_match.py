"""A prefix-cache lookup's result: the entries a prompt can resume from, and why the hit stops there."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from worker.kv_cache.radix import Node, Tier


class MatchStop(Enum):
    """Why a hit is no deeper than it is."""

    PROMPT_END = "prompt_end"  # it covers every block before the prompt's last token
    DIVERGED = "diverged"  # the cache holds nothing further along this prompt
    NO_WINDOW = "no_window"  # full KV goes deeper, but no window was ever retained down there
    WINDOW_DROPPED = "window_dropped"  # full KV goes deeper; a window there was dropped under pressure
    LOAD_FAILED = "load_failed"  # an entry on the host or disk could not be brought back (``take``)


# Which stops count as a hit cut short (full KV matched deeper than the hit), and under which reason.
CUT_SHORT = {
    MatchStop.NO_WINDOW: "missing_window",
    MatchStop.WINDOW_DROPPED: "eviction",
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

    @classmethod
    def of(
        cls, nodes: tuple[Node, ...], matched_tokens: int, stop: MatchStop, block_size: int
    ) -> PrefixMatch:
        by_tier = {t.value: 0 for t in Tier}
        for node in nodes:
            by_tier[node.tier.value] += block_size
        return cls(nodes, matched_tokens, stop, block_size, by_tier)

    @property
    def num_cached_tokens(self) -> int:
        return len(self.nodes) * self.block_size

    @property
    def cut_short_tokens(self) -> int:
        """Matched full KV beyond the hit, which had no window to resume from."""
        return self.matched_tokens - self.num_cached_tokens

    @property
    def tier(self) -> Tier | None:
        """The slowest tier the hit is served from (None: no hit)."""
        return next((t for t in (Tier.DISK, Tier.HOST, Tier.DEVICE) if self.tokens_by_tier[t.value]), None)

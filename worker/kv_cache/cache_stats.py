"""The counters the prefix cache adds to as it works (``metrics.py`` snapshots and exposes them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.kv_cache.prefix_match import SHORT_REASONS, PrefixMatch
from worker.kv_cache.radix import Tier


@dataclass
class CacheStats:
    """Counters the prefix cache adds to as it works, since it was built (``snapshot`` reads them)."""

    lookups: int = 0
    lookup_tokens: int = 0
    hit_tokens: int = 0
    hit_tokens_by_tier: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in Tier})
    hits_cut_short: int = 0  # full KV matched deeper than the hit (no window there)
    tokens_cut_short: int = 0
    # Hits shorter than the cache once allowed, and the tokens lost, by reason (``SHORT_REASONS``).
    short_hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHORT_REASONS, 0))
    short_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHORT_REASONS, 0))
    hit_tokens_earlier_calls: int = 0  # served from entries cached before the current engine call
    windows_retained: int = 0  # planned windows
    spare_windows_retained: int = 0  # opportunistic windows, at the other block boundaries passed
    windows_dropped: int = 0
    windows_passed: int = 0  # planned windows lowered once a later prompt went on past them
    nodes_evicted: int = 0  # left the device (to a lower tier or out of the cache)
    nodes_dropped: int = 0  # left the cache altogether
    promotions: int = 0
    failed_loads: int = 0

    def record_lookup(self, prompt_len: int, match: PrefixMatch, earlier_tokens: int) -> None:
        """Counts one admission's lookup, ``match`` as it was taken; ``earlier_tokens`` of its hit
        were cached before the current engine call."""
        self.lookups += 1
        self.hit_tokens_earlier_calls += earlier_tokens
        reason = match.short_reason
        if reason is not None:
            self.short_hits[reason] += 1
            self.short_tokens[reason] += match.lost_tokens
        self.lookup_tokens += prompt_len
        self.hit_tokens += match.num_cached_tokens
        for tier, tokens in match.tokens_by_tier.items():
            self.hit_tokens_by_tier[tier] += tokens
        if match.cut_short_tokens:
            self.hits_cut_short += 1
            self.tokens_cut_short += match.cut_short_tokens

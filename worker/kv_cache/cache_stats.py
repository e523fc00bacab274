"""The counters the prefix cache adds to as it works (``metrics.py`` snapshots and exposes them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.kv_cache.prefix_match import PrefixMatch
from worker.kv_cache.radix import Tier


@dataclass
class CacheStats:
    """Counters the prefix cache adds to as it works, since it was built (``snapshot`` reads them)."""

    lookups: int = 0
    lookup_tokens: int = 0
    hit_tokens: int = 0
    hit_tokens_by_tier: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in Tier})
    hits_cut_short: int = 0
    tokens_cut_short: int = 0
    windows_retained: int = 0
    windows_dropped: int = 0
    nodes_evicted: int = 0  # left the device (to a lower tier or out of the cache)
    nodes_dropped: int = 0  # left the cache altogether
    promotions: int = 0
    failed_loads: int = 0

    def record_lookup(self, prompt_len: int, match: PrefixMatch) -> None:
        """Counts one admission's lookup, ``match`` as it was taken."""
        self.lookups += 1
        self.lookup_tokens += prompt_len
        self.hit_tokens += match.num_cached_tokens
        for tier, tokens in match.tokens_by_tier.items():
            self.hit_tokens_by_tier[tier] += tokens
        if match.cut_short_tokens:
            self.hits_cut_short += 1
            self.tokens_cut_short += match.cut_short_tokens

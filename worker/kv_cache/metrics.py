"""Prefix-cache metrics: a snapshot of the cache's counters per engine, differences per batch,
Prometheus text exposition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.prefix_match import SHORT_REASONS
from worker.kv_cache.radix import Tier


@dataclass(frozen=True)
class CacheMetrics:
    lookups: int = 0
    lookup_tokens: int = 0
    hit_tokens: int = 0
    hit_tokens_device: int = 0
    hit_tokens_host: int = 0
    hit_tokens_disk: int = 0
    hit_tokens_shared: int = 0  # loaded from the tier all workers share (computed by any of them)
    hits_cut_short: int = 0
    tokens_cut_short: int = 0
    # Why hits were short: no window retained there; a window dropped or the KV evicted; a load
    # from the host or disk failed. Hits and the tokens they lost.
    hits_short_missing_window: int = 0
    hits_short_eviction: int = 0
    hits_short_tier: int = 0
    tokens_short_missing_window: int = 0
    tokens_short_eviction: int = 0
    tokens_short_tier: int = 0
    # Hit tokens on entries cached by an earlier engine call vs by this one (a batch's own prefixes).
    hit_tokens_earlier_calls: int = 0
    hit_tokens_this_call: int = 0
    windows_retained: int = 0
    spare_windows_retained: int = 0
    windows_dropped: int = 0
    windows_passed: int = 0
    evictions: int = 0
    promotions: int = 0
    failed_loads: int = 0
    # Gauges (a state, not a count): what the cache holds now.
    cached_tokens_device: int = 0
    device_bytes: int = 0

    @property
    def bytes_per_cached_token(self) -> float:
        return self.device_bytes / self.cached_tokens_device if self.cached_tokens_device else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0

    def since(self, earlier: CacheMetrics) -> CacheMetrics:
        """Counters accumulated after ``earlier`` (gauges as they are now): one batch's share."""
        gauges = {"cached_tokens_device", "device_bytes"}
        values = {
            f.name: getattr(self, f.name) - (0 if f.name in gauges else getattr(earlier, f.name))
            for f in fields(self)
        }
        return CacheMetrics(**values)

    def as_dict(self) -> dict:
        return asdict(self) | {
            "bytes_per_cached_token": self.bytes_per_cached_token,
            "hit_rate": self.hit_rate,
        }


def snapshot(cache: PrefixCache | None) -> CacheMetrics:
    if cache is None:
        return CacheMetrics()
    s = cache.stats
    device_nodes = cache.num_entries(Tier.DEVICE)
    return CacheMetrics(
        lookups=s.lookups,
        lookup_tokens=s.lookup_tokens,
        hit_tokens=s.hit_tokens,
        hit_tokens_device=s.hit_tokens_by_tier["device"],
        hit_tokens_host=s.hit_tokens_by_tier["host"],
        hit_tokens_disk=s.hit_tokens_by_tier["disk"],
        hit_tokens_shared=s.hit_tokens_by_tier["shared"],
        hits_cut_short=s.hits_cut_short,
        tokens_cut_short=s.tokens_cut_short,
        hits_short_missing_window=s.short_hits["missing_window"],
        hits_short_eviction=s.short_hits["eviction"],
        hits_short_tier=s.short_hits["tier"],
        tokens_short_missing_window=s.short_tokens["missing_window"],
        tokens_short_eviction=s.short_tokens["eviction"],
        tokens_short_tier=s.short_tokens["tier"],
        hit_tokens_earlier_calls=s.hit_tokens_earlier_calls,
        hit_tokens_this_call=s.hit_tokens - s.hit_tokens_earlier_calls,
        windows_retained=s.windows_retained,
        spare_windows_retained=s.spare_windows_retained,
        windows_dropped=s.windows_dropped,
        windows_passed=s.windows_passed,
        evictions=s.nodes_evicted,
        promotions=s.promotions,
        failed_loads=s.failed_loads,
        cached_tokens_device=device_nodes * cache.blocks.block_size,
        device_bytes=cache.device_bytes(),
    )


_HELP = {
    "lookups": "Prompts looked up in the prefix cache",
    "lookup_tokens": "Prompt tokens looked up",
    "hit_tokens": "Prompt tokens served from the prefix cache (any tier)",
    "hits_cut_short": "Lookups whose full-KV match went deeper than the last retained window",
    "tokens_cut_short": "Matched tokens lost because no window was retained there",
    "windows_retained": "Planned sliding-window windows retained",
    "spare_windows_retained": "Spare sliding-window windows kept at other block boundaries",
    "windows_dropped": "Retained windows dropped under memory pressure",
    "windows_passed": "Planned windows lowered once a later prompt extended the path past them",
    "evictions": "Cache entries moved off the device",
    "promotions": "Cache entries loaded back to the device on a hit",
    "failed_loads": "Entries that could not be loaded (corrupt, truncated or missing)",
}


def render_prometheus(metrics: CacheMetrics, prefix: str = "hybatch_kv_cache") -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for name, help_text in _HELP.items():
        lines += [
            f"# HELP {prefix}_{name}_total {help_text}",
            f"# TYPE {prefix}_{name}_total counter",
            f"{prefix}_{name}_total {getattr(metrics, name)}",
        ]
    lines += [
        f"# HELP {prefix}_hit_tokens_by_tier_total Prompt tokens served from the cache, by tier",
        f"# TYPE {prefix}_hit_tokens_by_tier_total counter",
    ]
    for tier in ("device", "host", "disk", "shared"):
        lines.append(
            f'{prefix}_hit_tokens_by_tier_total{{tier="{tier}"}} {getattr(metrics, "hit_tokens_" + tier)}'
        )
    lines += [
        f"# HELP {prefix}_hits_short_total Lookups whose hit was shorter than the cache once allowed, by reason",
        f"# TYPE {prefix}_hits_short_total counter",
    ]
    lines += [
        f'{prefix}_hits_short_total{{reason="{r}"}} {getattr(metrics, "hits_short_" + r)}'
        for r in SHORT_REASONS
    ]
    lines += [
        f"# HELP {prefix}_tokens_short_total Prompt tokens those short hits lost, by reason",
        f"# TYPE {prefix}_tokens_short_total counter",
    ]
    lines += [
        f'{prefix}_tokens_short_total{{reason="{r}"}} {getattr(metrics, "tokens_short_" + r)}'
        for r in SHORT_REASONS
    ]
    lines += [
        f"# HELP {prefix}_hit_tokens_by_origin_total Hit tokens cached by an earlier engine call or this one",
        f"# TYPE {prefix}_hit_tokens_by_origin_total counter",
        f'{prefix}_hit_tokens_by_origin_total{{origin="earlier_calls"}} {metrics.hit_tokens_earlier_calls}',
        f'{prefix}_hit_tokens_by_origin_total{{origin="this_call"}} {metrics.hit_tokens_this_call}',
    ]
    for name, help_text, value in (
        ("cached_tokens", "Tokens whose KV the cache holds on the device", metrics.cached_tokens_device),
        ("device_bytes", "Device bytes the cache holds", metrics.device_bytes),
        ("bytes_per_cached_token", "Device bytes per cached token", metrics.bytes_per_cached_token),
    ):
        lines += [
            f"# HELP {prefix}_{name} {help_text}",
            f"# TYPE {prefix}_{name} gauge",
            f"{prefix}_{name} {value}",
        ]
    return "\n".join(lines) + "\n"

"""The sliding-window-aware prefix KV cache: block pools, radix tree over blocks, retained SWA windows,
device → host → disk tiers, planning, and the one manager of a sequence's blocks.

Drivers (the engine, benchmarks that replay traces with block ids only) use these names:
``BlockManager`` (pools), ``PrefixCache`` (the tree and its tiers), ``KVCacheManager`` (match, admit,
grow, advance, release), ``PrefixMatch`` / ``MatchStop`` (a lookup's result) and ``Tier``.
"""

from worker.kv_cache.block_manager import BlockManager
from worker.kv_cache.kv_cache_manager import KVCacheManager
from worker.kv_cache.prefix_cache import PrefixCache
from worker.kv_cache.prefix_match import MatchStop, PrefixMatch
from worker.kv_cache.radix import Tier

__all__ = ["BlockManager", "KVCacheManager", "MatchStop", "PrefixCache", "PrefixMatch", "Tier"]

"""The worker process's one engine: loaded on first use, then reused by every batch.

Loading a checkpoint and allocating the KV pools takes long and holds most of the device, so
a worker process (one per GPU, or one per node whose engine spans its GPUs with tensor parallel)
keeps a single ``LLM`` for its whole life. The prefix cache
lives inside it, so later batches of the same account hit what earlier ones left behind.
torch and the engine are imported here only when the engine is first needed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from hybatch.settings import Settings

if TYPE_CHECKING:
    from worker.engine import LLM

MAX_NUM_SEQS = 64

_lock = threading.Lock()
_loaded: tuple[tuple, LLM] | None = None


def llm_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``LLM(settings.model, **options)``: every one always passed, so an
    engine that lacks one fails loudly instead of running without it."""
    return {
        "device": settings.device,
        "dtype": "auto",
        "enable_prefix_caching": True,
        "kv_cache_gb": settings.kv_cache_gb,
        "kv_swa_share": settings.kv_swa_share,
        "max_num_seqs": MAX_NUM_SEQS,
        "tensor_parallel_size": settings.tensor_parallel,
        "expert_parallel": settings.expert_parallel,
        "host_cache_gb": settings.host_cache_gb,
        "disk_cache_dir": str(settings.disk_cache_dir),
        "disk_cache_gb": settings.disk_cache_gb,
        "shared_cache_dir": str(settings.shared_cache_dir) if settings.shared_cache_dir else None,
        "shared_cache_url": settings.shared_cache_url,
        "s3_endpoint_url": settings.s3_endpoint_url,
        "s3_region": settings.s3_region,
    }


def get_llm(settings: Settings) -> LLM:
    """The process's engine for ``settings`` (model, device, cache sizes); loads it on first call.

    A call with different settings replaces the loaded engine (tests do this; a worker never does).
    """
    global _loaded
    from worker.engine import LLM

    options = llm_options(settings)
    key = (str(settings.model), tuple(sorted(options.items())))
    with _lock:
        if _loaded is None or _loaded[0] != key:
            _loaded = None  # drop the old engine before the new one allocates its pools
            _loaded = (key, LLM(settings.model, **options))
        return _loaded[1]


def loaded_llm() -> LLM | None:
    """The engine this process has loaded, if any (the metrics endpoint reads it)."""
    with _lock:
        return _loaded[1] if _loaded is not None else None

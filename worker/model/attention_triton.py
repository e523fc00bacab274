"""The Triton attention backend: the engine's seam mapped onto ``kernels.paged_attention``."""

from __future__ import annotations

from kernels import paged_attention, write_kv
from worker.model.attention_metadata import AttentionMetadata, PagedKV


class TritonAttention:
    name = "triton"

    def forward(
        self, q, k, v, k_cache, v_cache, meta: AttentionMetadata, pool: PagedKV, *, window, sinks, scale
    ):
        write_kv(k.to(k_cache.dtype), v.to(v_cache.dtype), k_cache, v_cache, pool.slot_mapping)
        return paged_attention(
            q.contiguous(),
            k_cache,
            v_cache,
            pool.block_table,
            pool.block_table_start,
            meta.query_start_loc,
            meta.seq_lens,
            window=window,
            sinks=sinks,
            scale=scale,
        )

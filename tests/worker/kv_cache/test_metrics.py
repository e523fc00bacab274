from worker.engine import LLM, SamplingParams
from worker.kv_cache.metrics import CacheMetrics, render_prometheus


def test_metrics_count_a_batch_and_render_as_prometheus_text(checkpoint_factory):
    llm = LLM(
        checkpoint_factory(sliding_window=8),
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
    )
    shared = list(range(1, 25))
    before = llm.cache_metrics()
    llm.generate(
        [{"prompt_token_ids": shared + [30 + i, 40 + i]} for i in range(4)],
        SamplingParams(temperature=0, max_tokens=2),
    )
    batch = llm.cache_metrics().since(before)
    assert batch.lookups == 4
    assert batch.hit_tokens == 3 * 24 == batch.hit_tokens_device
    assert batch.windows_retained >= 1
    assert batch.cached_tokens_device > 0 and batch.bytes_per_cached_token > 0
    text = render_prometheus(batch)
    assert "hybatch_kv_cache_hit_tokens_total 72" in text
    assert 'hybatch_kv_cache_hit_tokens_by_tier_total{tier="host"} 0' in text
    assert "# TYPE hybatch_kv_cache_device_bytes gauge" in text


def test_metrics_are_zero_without_prefix_caching(checkpoint_factory):
    llm = LLM(
        checkpoint_factory(sliding_window=8), device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01
    )
    assert llm.cache_metrics() == CacheMetrics()

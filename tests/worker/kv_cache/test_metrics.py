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


def make(path, **kw):
    kw = {"device": "cpu", "dtype": "float32", "block_size": 4, "kv_cache_gb": 0.01} | kw
    return LLM(path, enable_prefix_caching=True, **kw)


PARAMS = SamplingParams(temperature=0, max_tokens=2)


def test_hit_tokens_from_earlier_calls_and_from_this_one(checkpoint_factory):
    llm = make(checkpoint_factory(sliding_window=8))
    shared = list(range(1, 25))
    prompts = [{"prompt_token_ids": shared + [30 + i, 40 + i]} for i in range(4)]
    first = llm.cache_metrics()
    llm.generate(prompts, PARAMS)
    one = llm.cache_metrics().since(first)
    assert (one.hit_tokens_this_call, one.hit_tokens_earlier_calls) == (3 * 24, 0)
    llm.generate(prompts, PARAMS)
    two = llm.cache_metrics().since(first).since(one)
    assert two.hit_tokens == 4 * 24 and two.hit_tokens_earlier_calls == 4 * 24
    text = render_prometheus(two)
    assert 'hybatch_kv_cache_hit_tokens_by_origin_total{origin="earlier_calls"} 96' in text


def test_a_hit_short_of_a_window_counts_as_missing_window(checkpoint_factory):
    llm = make(checkpoint_factory(sliding_window=8), opportunistic_windows=False)
    first = list(range(1, 42))
    llm.generate([{"prompt_token_ids": first}], PARAMS)
    llm.generate([{"prompt_token_ids": first[:38] + [90, 91, 92]}], PARAMS)
    m = llm.cache_metrics()
    assert (m.hits_short_missing_window, m.tokens_short_missing_window) == (1, 36)
    assert m.hits_short_eviction == m.hits_short_tier == 0
    assert 'hybatch_kv_cache_hits_short_total{reason="missing_window"} 1' in render_prometheus(m)


def test_a_hit_short_because_its_kv_was_evicted_counts_as_eviction(checkpoint_factory):
    # 12 full blocks: the second prompt's 10 blocks push the first prompt's entries out of the cache.
    llm = make(checkpoint_factory(sliding_window=8), num_full_blocks=12, num_swa_blocks=12)
    first, second = list(range(1, 42)), list(range(50, 91))
    llm.generate([{"prompt_token_ids": first}], PARAMS)
    llm.generate([{"prompt_token_ids": second}], PARAMS)
    again = llm.generate([{"prompt_token_ids": first}], PARAMS)[0]
    m = llm.cache_metrics()
    assert again.num_cached_tokens < 40
    assert m.hits_short_eviction >= 1 and m.tokens_short_eviction >= 40 - again.num_cached_tokens
    assert m.hits_short_missing_window == 0
    llm.engine.check_integrity()


def test_a_hit_short_because_a_host_entry_could_not_load_counts_as_tier(checkpoint_factory):
    llm = make(checkpoint_factory(sliding_window=8), host_cache_gb=0.01)
    prompt = list(range(1, 42))
    llm.generate([{"prompt_token_ids": prompt}], PARAMS)
    cache = llm.engine.cache
    cache.demote_all()
    deepest = max((n for n in cache.tree.nodes() if n.window_len), key=lambda n: n.depth)
    host = cache.tiers.host
    host.put(deepest.block_hash, host.take(deepest.block_hash)[:-1])  # a truncated payload
    out = llm.generate([{"prompt_token_ids": prompt}], PARAMS)[0]
    m = llm.cache_metrics()
    assert m.failed_loads == 1 and out.num_cached_tokens < 40
    assert m.hits_short_tier == 1 and m.tokens_short_tier > 0
    llm.engine.check_integrity()

"""The prefix cache in the engine: identical greedy outputs, fewer tokens computed, isolation, eviction."""

import random

import pytest

from worker.engine import LLM, SamplingParams
from worker.kv_cache.radix import WindowKind

PARAMS = SamplingParams(temperature=0, max_tokens=10)


def shared_prefix_prompts(seed=0, num=12, system_len=40):
    rng = random.Random(seed)
    systems = [[rng.randrange(97) for _ in range(system_len)] for _ in range(3)]
    prompts = [systems[i % 3] + [rng.randrange(97) for _ in range(rng.randint(1, 10))] for i in range(num)]
    rng.shuffle(prompts)
    return systems, prompts


def make(path, **kw):
    kw = {"device": "cpu", "dtype": "float32", "block_size": 4, "kv_cache_gb": 0.01} | kw
    return LLM(path, **kw)


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=8)


@pytest.fixture(scope="module")
def baseline(path):
    _, prompts = shared_prefix_prompts()
    llm = make(path)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    return prompts, [o.outputs[0].token_ids for o in outs]


def test_cache_gives_identical_outputs_and_computes_each_shared_prefix_once(path, baseline):
    prompts, expected = baseline
    llm = make(path, enable_prefix_caching=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    assert [o.outputs[0].token_ids for o in outs] == expected
    llm.engine.check_integrity()
    systems, _ = shared_prefix_prompts()
    minimum = sum(map(len, systems)) + sum(len(p) - 40 for p in prompts)
    assert llm.stats().num_prompt_tokens_computed == minimum
    for out in outs:
        assert out.num_cached_tokens in (0, 40)
        assert out.num_cached_tokens + out.num_computed_prompt_tokens == len(out.prompt_token_ids)
    assert sum(o.num_cached_tokens for o in outs) == 40 * (len(prompts) - 3)


def test_second_pass_hits_at_prompt_ends(path, baseline):
    prompts, expected = baseline
    llm = make(path, enable_prefix_caching=True)
    llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    again = llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    assert [o.outputs[0].token_ids for o in again] == expected
    for prompt, out in zip(prompts, again, strict=True):
        # A prompt resumes at its last block boundary before its last token (window retained there).
        assert (
            out.num_cached_tokens == (len(prompt) - 1) // 4 * 4
            or out.num_cached_tokens == len(prompt) // 4 * 4
        )
        assert out.num_cached_tokens < len(prompt)
    llm.engine.check_integrity()


def test_accounts_never_share_blocks(path):
    prompt = list(range(1, 30))
    llm = make(path, enable_prefix_caching=True)
    first = llm.generate([{"prompt_token_ids": prompt, "cache_salt": "acct_1"}], PARAMS)[0]
    other = llm.generate([{"prompt_token_ids": prompt, "cache_salt": "acct_2"}], PARAMS)[0]
    same = llm.generate([{"prompt_token_ids": prompt, "cache_salt": "acct_1"}], PARAMS)[0]
    assert first.num_cached_tokens == 0
    assert other.num_cached_tokens == 0
    assert same.num_cached_tokens == 28
    assert other.outputs[0].token_ids == first.outputs[0].token_ids == same.outputs[0].token_ids
    both = llm.generate([{"prompt_token_ids": prompt, "cache_salt": s} for s in ("acct_1", "acct_2")], PARAMS)
    assert [o.num_cached_tokens for o in both] == [28, 28]
    llm.engine.check_integrity()
    # The two accounts' cached paths are disjoint sets of blocks.
    blocks_by_root = [
        {n.full_block for n in _subtree(root)} for root in llm.engine.cache.tree.root_children.values()
    ]
    assert len(blocks_by_root) == 2 and not blocks_by_root[0] & blocks_by_root[1]


def _subtree(node):
    yield node
    for child in node.children.values():
        yield from _subtree(child)


def test_hit_without_a_window_is_cut_short_and_counted(path):
    llm = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    first = list(range(1, 42))  # 41 tokens: full KV for 10 blocks, one window retained at token 40
    llm.generate([{"prompt_token_ids": first}], PARAMS)
    # Shares 38 tokens: full KV matches 9 blocks (36 tokens) but no window ends at 36, so no hit.
    probe = first[:38] + [90, 91, 92]
    out = llm.generate([{"prompt_token_ids": probe}], PARAMS)[0]
    stats = llm.engine.cache.stats
    assert out.num_cached_tokens == 0
    assert stats.hits_cut_short == 1 and stats.tokens_cut_short == 36
    # The same prompt again resumes at its retained window.
    again = llm.generate([{"prompt_token_ids": first}], PARAMS)[0]
    assert again.num_cached_tokens == 40


@pytest.mark.parametrize("num_full_blocks,num_swa_blocks", [(40, 20), (28, 12)])
def test_tiny_budgets_force_eviction_mid_batch_and_outputs_stay_identical(
    path, baseline, num_full_blocks, num_swa_blocks
):
    prompts, expected = baseline
    llm = make(
        path,
        enable_prefix_caching=True,
        num_full_blocks=num_full_blocks,
        num_swa_blocks=num_swa_blocks,
        max_num_batched_tokens=9,
    )
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], PARAMS)
    assert [o.outputs[0].token_ids for o in outs] == expected
    stats = llm.engine.cache.stats
    assert stats.nodes_evicted + stats.windows_dropped > 0
    llm.engine.check_integrity()


def test_retain_every_n_tokens_lets_longer_shared_prefixes_hit(path):
    llm = make(path, enable_prefix_caching=True, retain_every_tokens=8, opportunistic_windows=False)
    base = list(range(1, 41))
    llm.generate([{"prompt_token_ids": base + [60, 61, 62]}], PARAMS)
    out = llm.generate([{"prompt_token_ids": base[:30] + [90, 91]}], PARAMS)[0]
    assert out.num_cached_tokens == 24  # the deepest multiple of 8 inside the shared 30 tokens


def test_spare_windows_hit_at_any_block_boundary_while_the_swa_pool_has_room(path):
    llm = make(path, enable_prefix_caching=True)
    first = list(range(1, 42))
    llm.generate([{"prompt_token_ids": first}], PARAMS)
    probe = first[:38] + [90, 91, 92]  # the planned-only cache hits nothing here (test above)
    out = llm.generate([{"prompt_token_ids": probe}], PARAMS)[0]
    assert out.num_cached_tokens == 36
    assert llm.engine.cache.stats.hits_cut_short == 0
    llm.engine.check_integrity()


def test_under_swa_pressure_spare_windows_go_first_and_planned_ones_still_hit(path):
    # 14 SWA blocks: a running sequence needs ceil(8/4) + 1 + a chunk of 2 blocks; the first prompt's
    # spare windows fill the rest, and the second prompt's prefill must drop them.
    llm = make(path, enable_prefix_caching=True, num_swa_blocks=14, max_num_batched_tokens=8)
    first = list(range(1, 42))
    llm.generate([{"prompt_token_ids": first}], PARAMS)
    llm.generate([{"prompt_token_ids": list(range(50, 91))}], PARAMS)
    stats = llm.engine.cache.stats
    assert stats.spare_windows_retained > 0 and stats.windows_dropped > 0
    llm.engine.check_integrity()
    again = llm.generate([{"prompt_token_ids": first}], PARAMS)[0]
    assert again.num_cached_tokens == 40  # the planned window at the prompt's end survived


def test_a_window_is_planned_where_a_new_prompt_leaves_a_cached_path(path):
    llm = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    base = list(range(1, 41))
    llm.generate([{"prompt_token_ids": base + [60, 61, 62]}], PARAMS)
    # Leaves the cached path inside block 7 (token 30): full KV for 28 tokens, but no window there.
    second = llm.generate([{"prompt_token_ids": base[:30] + [90, 91, 92, 93, 94]}], PARAMS)[0]
    assert second.num_cached_tokens == 0
    # It planned a window at 28 as it computed past it: the next prompt with that prefix hits there.
    third = llm.generate([{"prompt_token_ids": base[:30] + [70, 71, 72]}], PARAMS)[0]
    assert third.num_cached_tokens == 28
    llm.engine.check_integrity()


def test_a_spare_window_hit_where_a_prompt_diverges_becomes_planned(path):
    llm = make(path, enable_prefix_caching=True)
    base = list(range(1, 41))
    llm.generate([{"prompt_token_ids": base + [60, 61, 62]}], PARAMS)
    cache = llm.engine.cache
    at_28 = next(n for n in cache.tree.nodes() if n.end_token == 28)
    assert at_28.window_kind is WindowKind.SPARE
    out = llm.generate([{"prompt_token_ids": base[:30] + [90, 91, 92, 93, 94]}], PARAMS)[0]
    assert out.num_cached_tokens == 28
    assert at_28.window_kind is WindowKind.PLANNED
    llm.engine.check_integrity()


def test_windows_are_planned_at_chat_message_boundaries(path):
    llm = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    system = list(range(1, 24))  # a 23-token system prompt: its message ends at offset 23
    first = {"prompt_token_ids": system + [50, 51, 52, 53, 54, 55, 56], "message_boundaries": [23]}
    llm.generate([first], PARAMS)
    out = llm.generate([{"prompt_token_ids": system + [80, 81, 82, 83]}], PARAMS)[0]
    assert out.num_cached_tokens == 20  # the last block boundary inside the system prompt


def test_without_message_boundaries_the_same_turn_misses(path):
    llm = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    system = list(range(1, 24))
    llm.generate([{"prompt_token_ids": system + [50, 51, 52, 53, 54, 55, 56]}], PARAMS)
    out = llm.generate([{"prompt_token_ids": system + [80, 81, 82, 83]}], PARAMS)[0]
    assert out.num_cached_tokens == 0  # the test above is not passing by accident


@pytest.mark.parametrize("boundaries", [[3, "7"], [99], 5, [True]])
def test_bad_message_boundaries_are_refused_by_name(path, boundaries):
    llm = make(path, enable_prefix_caching=True)
    bad = {"prompt_token_ids": list(range(1, 10)), "message_boundaries": boundaries}
    outs = llm.generate([bad, {"prompt_token_ids": list(range(1, 10))}], PARAMS)
    assert outs[0].error is not None and "message_boundaries" in outs[0].error
    assert outs[1].error is None and len(outs[1].outputs[0].token_ids) == PARAMS.max_tokens


def test_message_windows_are_dropped_before_planned_ones(path):
    llm = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    other = list(range(60, 90))
    llm.generate([{"prompt_token_ids": other}], PARAMS)  # the oldest window: at its end, planned
    system = list(range(1, 24))
    chat = {"prompt_token_ids": system + [50, 51, 52, 53, 54, 55, 56], "message_boundaries": [23]}
    llm.generate([chat], PARAMS)
    cache = llm.engine.cache
    kinds = sorted((n.end_token, n.window_kind) for n in cache.tree.nodes() if n.window)
    assert (20, WindowKind.MESSAGE) in kinds and (28, WindowKind.PLANNED) in kinds
    cache.reclaim(0, llm.engine.blocks.swa.num_free + 1)  # one window's worth: the message one goes
    llm.engine.check_integrity()
    assert not [n for n in cache.tree.nodes() if n.window_kind is WindowKind.MESSAGE]
    again = llm.generate([{"prompt_token_ids": other}], PARAMS)[0]
    assert again.num_cached_tokens == 28  # the older planned window was kept


def test_the_footprint_without_spare_windows_is_the_planned_only_cache(path):
    prompt = list(range(1, 42))
    with_spare = make(path, enable_prefix_caching=True)
    planned_only = make(path, enable_prefix_caching=True, opportunistic_windows=False)
    for llm in (with_spare, planned_only):
        llm.generate([{"prompt_token_ids": prompt}], PARAMS)
    cache = with_spare.engine.cache
    assert cache.device_bytes(include_spare=False) == planned_only.engine.cache.device_bytes()
    assert cache.device_bytes() > cache.device_bytes(include_spare=False)

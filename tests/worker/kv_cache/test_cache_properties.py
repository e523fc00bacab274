"""Random request sequences against a plain model of what the cache must hold."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.engine import LLM, SamplingParams

B = 4
PARAMS = SamplingParams(temperature=0, max_tokens=3)

# Prompts from a tiny alphabet with common stems, so prefixes collide often.
stems = st.sampled_from(
    [[5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 20, 21], [30, 31, 32, 33, 34, 35, 36, 37, 38]]
)
tails = st.lists(st.integers(1, 6), min_size=0, max_size=7)
requests = st.lists(
    st.tuples(stems, tails, st.sampled_from(["a", "b"])).map(lambda t: (t[0] + t[1], t[2])),
    min_size=1,
    max_size=6,
).filter(lambda rs: all(rs_prompt for rs_prompt, _ in rs))


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=6, num_layers=3)


@pytest.fixture(scope="module")
def reference(path):
    llm = LLM(path, device="cpu", dtype="float32", block_size=B, kv_cache_gb=0.01)
    memo = {}

    def run(prompt):
        key = tuple(prompt)
        if key not in memo:
            memo[key] = llm.generate([{"prompt_token_ids": prompt}], PARAMS)[0].outputs[0].token_ids
        return memo[key]

    return run


def predicted_hit(windows: set, prompt: list[int], salt: str) -> int:
    best = 0
    for p in range(B, (len(prompt) - 1) // B * B + 1, B):
        if (salt, tuple(prompt[:p])) in windows:
            best = p
    return best


def computed_blocks(prompt: list[int], output: list[int]) -> list[tuple[int, ...]]:
    """Every block-aligned prefix a request computed, so cached full KV for: the prompt and every
    generated token but the last, which is sampled and never computed."""
    computed = prompt + output[:-1]
    return [tuple(computed[:p]) for p in range(B, len(computed) // B * B + 1, B)]


def retained_windows(
    full: set, prompt: list[int], output: list[int], salt: str, opportunistic: bool
) -> list[tuple[int, ...]]:
    """The prefixes a request leaves a window at, with nothing evicted (``full``: the cached full-KV
    prefixes before it ran). With spare windows, every block boundary it computed. Planned ones: its
    prompt's last block boundary, and where it left a cached path before its last block boundary."""
    if opportunistic:
        return computed_blocks(prompt, output)
    windows = []
    end = len(prompt) // B * B
    if end:
        windows.append(tuple(prompt[:end]))
    matched = 0
    while matched + B <= (len(prompt) - 1) // B * B and (salt, tuple(prompt[: matched + B])) in full:
        matched += B
    if 0 < matched < (len(prompt) - 1) // B * B:
        windows.append(tuple(prompt[:matched]))
    return windows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests, st.booleans())
def test_hits_match_a_model_of_retained_windows_with_an_ample_budget(path, reference, reqs, opportunistic):
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=B,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        opportunistic_windows=opportunistic,
    )
    windows: set = set()
    full: set = set()
    for prompt, salt in reqs:
        out = llm.generate([{"prompt_token_ids": prompt, "cache_salt": salt}], PARAMS)[0]
        output = out.outputs[0].token_ids
        assert output == reference(prompt)
        assert out.num_cached_tokens == predicted_hit(windows, prompt, salt)
        llm.engine.check_integrity()
        windows.update((salt, w) for w in retained_windows(full, prompt, output, salt, opportunistic))
        full.update((salt, block) for block in computed_blocks(prompt, output))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests, st.integers(9, 14), st.integers(5, 9), st.booleans())
def test_under_eviction_hits_never_exceed_the_model_and_outputs_stay_exact(
    path, reference, reqs, num_full_blocks, num_swa_blocks, opportunistic
):
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=B,
        num_full_blocks=num_full_blocks,
        num_swa_blocks=num_swa_blocks,
        max_num_batched_tokens=5,
        enable_prefix_caching=True,
        opportunistic_windows=opportunistic,
    )
    outs = llm.generate([{"prompt_token_ids": p, "cache_salt": s} for p, s in reqs], PARAMS)
    for (prompt, _salt), out in zip(reqs, outs, strict=True):
        if out.error:
            assert "KV blocks" in out.error  # only a request too large for the tiny cache may be refused
            continue
        assert out.outputs[0].token_ids == reference(prompt)
        assert out.num_cached_tokens <= len(prompt) - 1
    llm.engine.check_integrity()
    for prompt, salt in reqs:
        out = llm.generate([{"prompt_token_ids": prompt, "cache_salt": salt}], PARAMS)[0]
        if out.error is None:
            assert out.outputs[0].token_ids == reference(prompt)
            assert out.num_cached_tokens <= len(prompt) - 1
        llm.engine.check_integrity()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests, st.integers(9, 14), st.integers(5, 9), st.booleans())
def test_a_second_engine_on_the_shared_tier_stays_exact_and_consistent(
    path, reference, reqs, num_full_blocks, num_swa_blocks, opportunistic
):
    import tempfile

    with tempfile.TemporaryDirectory() as shared_dir:
        engines = [
            LLM(
                path,
                device="cpu",
                dtype="float32",
                block_size=B,
                num_full_blocks=num_full_blocks,
                num_swa_blocks=num_swa_blocks,
                max_num_batched_tokens=5,
                enable_prefix_caching=True,
                opportunistic_windows=opportunistic,
                shared_cache_dir=shared_dir,  # no local disk: evicted entries stay in the shared tier
            )
            for _ in range(2)
        ]
        for llm in engines:  # the second engine starts cold and finds what the first published
            for prompt, salt in reqs:
                out = llm.generate([{"prompt_token_ids": prompt, "cache_salt": salt}], PARAMS)[0]
                if out.error is None:
                    assert out.outputs[0].token_ids == reference(prompt)
                    assert out.num_cached_tokens <= len(prompt) - 1
                llm.engine.check_integrity()

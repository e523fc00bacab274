"""Random request sequences against a plain model of what the cache must hold."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.engine import LLM, SamplingParams
from worker.kv_cache.block_hash import chain_hash
from worker.kv_cache.radix import WindowKind

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


def computed_blocks(prompt: list[int], output: list[int]) -> list[tuple[int, ...]]:
    """Every block-aligned prefix a request computed, so cached full KV for: the prompt and every
    generated token but the last, which is sampled and never computed."""
    computed = prompt + output[:-1]
    return [tuple(computed[:p]) for p in range(B, len(computed) // B * B + 1, B)]


_RANK = {WindowKind.SPARE: 0, WindowKind.MESSAGE: 1, WindowKind.TAIL: 2, WindowKind.PLANNED: 3}
SPAN = 2  # blocks a window spans: ceil((W - 1) / B) with W = 6


class WindowModel:
    """What an ample cache holds, per account: the prefixes with full KV, and the window kind kept at
    each prefix that has a window. A request hits at its deepest window before its last token. Where
    its full-KV match ends short of its last block boundary: if a cached prefix goes on there, it
    diverges (a window planned there: the hit's own, or one it retains as it computes past); if none
    does, it extends a cached prompt, and each window of its hit where the tree does not branch drops
    to the kind the request itself gives that point. As it computes, it keeps windows at its
    prompt's last block boundary and divergence point (planned), at its message boundaries (message)
    and, with spare windows on, at every other block boundary: tail windows in the span before a
    plain prompt's end (one without message boundaries), spare ones elsewhere; a window kept again
    takes the higher kind."""

    def __init__(self, opportunistic: bool) -> None:
        self.opportunistic = opportunistic
        self.full: set[tuple[str, tuple[int, ...]]] = set()
        self.kinds: dict[tuple[str, tuple[int, ...]], WindowKind] = {}

    def hit(self, prompt: list[int], salt: str) -> int:
        ends = range(B, (len(prompt) - 1) // B * B + 1, B)
        return max((p for p in ends if (salt, tuple(prompt[:p])) in self.kinds), default=0)

    def _children(self, salt: str, prefix: tuple[int, ...]) -> int:
        return sum(
            1 for s, k in self.full if s == salt and len(k) == len(prefix) + B and k[: len(prefix)] == prefix
        )

    def _keep(self, key: tuple[str, tuple[int, ...]], kind: WindowKind) -> None:
        if key not in self.kinds or _RANK[kind] > _RANK[self.kinds[key]]:
            self.kinds[key] = kind

    def run(self, prompt: list[int], output: list[int], salt: str, boundaries: set[int]) -> None:
        last = (len(prompt) - 1) // B * B
        hit = self.hit(prompt, salt)
        matched = 0
        while matched + B <= last and (salt, tuple(prompt[: matched + B])) in self.full:
            matched += B
        planned = {len(prompt) // B * B}

        def kind_at(p: int) -> WindowKind:
            if p in planned:
                return WindowKind.PLANNED
            if p in boundaries:
                return WindowKind.MESSAGE
            prompt_end = len(prompt) // B * B
            in_tail = prompt_end - SPAN * B <= p < prompt_end
            return WindowKind.TAIL if in_tail and not boundaries else WindowKind.SPARE

        if 0 < matched < last:
            if not self._children(salt, tuple(prompt[:matched])):
                for p in range(B, hit + 1, B):
                    key = (salt, tuple(prompt[:p]))
                    lower = key in self.kinds and _RANK[kind_at(p)] < _RANK[self.kinds[key]]
                    if lower and self._children(salt, key[1]) <= 1:
                        self.kinds[key] = kind_at(p)
            elif matched == hit:
                self._keep((salt, tuple(prompt[:matched])), WindowKind.PLANNED)
            else:
                planned.add(matched)
        for block in computed_blocks(prompt, output):
            if len(block) > hit and (self.opportunistic or not kind_at(len(block)).is_spare):
                self._keep((salt, block), kind_at(len(block)))
        self.full.update((salt, block) for block in computed_blocks(prompt, output))

    def kinds_by_hash(self) -> dict[bytes, WindowKind]:
        by_hash = {}
        for (salt, prefix), kind in self.kinds.items():
            block_hash = None
            for p in range(0, len(prefix), B):
                block_hash = chain_hash(block_hash, list(prefix[p : p + B]), salt)
            by_hash[block_hash] = kind
        return by_hash


# A request is a fresh prompt, or the next turn of the one before: its prompt, its output and a new
# message (``None`` for the prompt); message boundaries are offsets into the prompt.
turns = st.tuples(
    st.one_of(st.none(), stems.flatmap(lambda stem: tails.map(lambda tail: stem + tail))),
    st.lists(st.integers(1, 6), min_size=1, max_size=9),
    st.sampled_from(["a", "b"]),
    st.lists(st.integers(0, 40), max_size=3),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(turns, min_size=1, max_size=6), st.booleans())
def test_hits_and_window_kinds_match_a_model_with_an_ample_budget(path, reference, reqs, opportunistic):
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=B,
        kv_cache_gb=0.01,
        enable_prefix_caching=True,
        opportunistic_windows=opportunistic,
    )
    model = WindowModel(opportunistic)
    previous = None  # (prompt, output, salt) of the request before
    for fresh, message, salt, offsets in reqs:
        if fresh is None and previous is not None:
            prompt, output, salt = previous[0] + previous[1] + message, None, previous[2]
        else:
            prompt = fresh or message
        offsets = [o for o in offsets if o <= len(prompt)]
        request = {"prompt_token_ids": prompt, "cache_salt": salt, "message_boundaries": offsets}
        out = llm.generate([request], PARAMS)[0]
        output = out.outputs[0].token_ids
        assert output == reference(prompt)
        assert out.num_cached_tokens == model.hit(prompt, salt)
        llm.engine.check_integrity()
        model.run(prompt, output, salt, {o // B * B for o in offsets if o >= B})
        previous = (prompt, output, salt)
        held = {n.block_hash: n.window_kind for n in llm.engine.cache.tree.nodes() if n.window}
        assert held == model.kinds_by_hash()


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

"""The cross-call probe of issue 13: a later call repeating a 400-token prefix with another tail hits it.

Default settings: the worker's engine options (``worker.engine_pool.llm_options``: 1 GB of device KV,
64 sequences, the host and disk tiers, block size 16) on a tiny checkpoint with the default model's
window of 128. Before spare windows and divergence windows this probe hit 0 tokens (the only window
on that path was at the end of the first prompt, 16 tokens past where the second one parts).
"""

from __future__ import annotations

import random

import pytest

from hybatch.settings import Settings
from worker.engine import LLM, SamplingParams
from worker.engine_pool import llm_options

PARAMS = SamplingParams(temperature=0, max_tokens=12)
SALT = "acct_probe"


@pytest.fixture(scope="module")
def path(checkpoint_factory):
    return checkpoint_factory(sliding_window=128)


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(13)
    prefix = [rng.randrange(97) for _ in range(400)]
    return [prefix + [rng.randrange(97) for _ in range(23)] for _ in range(3)]


def worker_llm(path, tmp_path, **overrides) -> LLM:
    settings = Settings(data_dir=tmp_path, model=path)
    options = llm_options(settings)
    return LLM(path, **(options | {"dtype": "float32"} | overrides))


@pytest.fixture(scope="module")
def expected(path, prompts, tmp_path_factory):
    plain = worker_llm(path, tmp_path_factory.mktemp("plain"), enable_prefix_caching=False)
    return [plain.generate([{"prompt_token_ids": p, "cache_salt": SALT}], PARAMS)[0] for p in prompts]


def test_a_later_call_with_the_same_prefix_hits_it(path, prompts, expected, tmp_path):
    llm = worker_llm(path, tmp_path)
    assert llm.engine.runner.layout.block_size == 16
    outs = [llm.generate([{"prompt_token_ids": p, "cache_salt": SALT}], PARAMS)[0] for p in prompts]
    assert outs[0].num_cached_tokens == 0
    assert outs[1].num_cached_tokens >= 384 and outs[2].num_cached_tokens >= 384
    assert [o.outputs[0].token_ids for o in outs] == [e.outputs[0].token_ids for e in expected]
    llm.engine.check_integrity()
    metrics = llm.cache_metrics()
    assert metrics.hits_cut_short == 0 and metrics.hit_tokens == outs[1].num_cached_tokens * 2


def test_planned_windows_alone_miss_once_then_hit_at_the_divergence(path, prompts, expected, tmp_path):
    llm = worker_llm(path, tmp_path, opportunistic_windows=False)
    outs = [llm.generate([{"prompt_token_ids": p, "cache_salt": SALT}], PARAMS)[0] for p in prompts]
    assert outs[1].num_cached_tokens == 0  # what the issue measured: the window was missing
    assert outs[2].num_cached_tokens >= 384  # the second call planned one where it diverged
    assert [o.outputs[0].token_ids for o in outs] == [e.outputs[0].token_ids for e in expected]
    assert llm.cache_metrics().hits_cut_short == 1


def test_another_salt_never_hits(path, prompts, tmp_path):
    llm = worker_llm(path, tmp_path)
    llm.generate([{"prompt_token_ids": prompts[0], "cache_salt": SALT}], PARAMS)
    other = llm.generate([{"prompt_token_ids": prompts[1], "cache_salt": "acct_other"}], PARAMS)[0]
    assert other.num_cached_tokens == 0

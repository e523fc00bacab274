"""Embeddings from the engine equal transformers' final hidden states, mean-pooled and normalised."""

import pytest
import torch
import torch.nn.functional as F
from checkpoints import load_reference

from worker.engine import LLM
from worker.engine.embed import _groups


def reference_embedding(reference, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        hidden = reference.model(torch.tensor([prompt])).last_hidden_state[0]  # [len, hidden]
    pooled = hidden.mean(dim=0)
    return pooled / pooled.norm()


@pytest.fixture(scope="module")
def case(checkpoint_factory):
    # window 8, block size 4: most prompts span several windows and several blocks.
    path = checkpoint_factory(sliding_window=8, num_layers=4)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in (1, 5, 23, 40, 9)]
    reference = load_reference(path)
    return path, prompts, [reference_embedding(reference, p) for p in prompts]


@pytest.mark.parametrize(
    "engine_kwargs",
    [{"block_size": 4, "max_num_batched_tokens": 30}, {"block_size": 16, "max_num_batched_tokens": 512}],
    ids=["packed-in-groups-block4", "one-pass-block16"],
)
def test_embeddings_match_transformers(case, engine_kwargs):
    path, prompts, expected = case
    llm = LLM(
        path, device="cpu", dtype="float32", kv_cache_gb=0.01, enable_prefix_caching=True, **engine_kwargs
    )
    vectors = llm.embed(prompts)
    assert len(vectors) == len(prompts)
    for vector, want in zip(vectors, expected, strict=True):
        assert vector.dtype == torch.float32 and vector.shape == want.shape
        torch.testing.assert_close(vector, want, atol=2e-5, rtol=1e-4)
        assert abs(float(vector.norm()) - 1.0) < 1e-5
    # Different prompts give different directions (a constant vector would pass the norm check).
    assert float(F.cosine_similarity(vectors[2], vectors[3], dim=0)) < 0.999
    # Scratch KV only: nothing entered the prefix cache or the block pools.
    llm.engine.check_integrity()
    assert llm.engine.blocks.full.num_used == 0 and llm.engine.blocks.swa.num_used == 0
    assert llm.cache_metrics().as_dict()["lookup_tokens"] == 0


def test_an_empty_or_too_long_prompt_is_refused(case):
    path, _prompts, _expected = case
    llm = LLM(path, device="cpu", dtype="float32", kv_cache_gb=0.01)
    with pytest.raises(ValueError, match="at least one token"):
        llm.embed([[1, 2], []])
    with pytest.raises(ValueError, match="longer than"):
        llm.embed([[1] * (llm.max_model_len + 1)])


def test_groups_pack_consecutive_prompts_within_the_budget():
    assert _groups([3, 4, 5, 20, 1, 1], 10) == [[0, 1], [2], [3], [4, 5]]
    assert _groups([], 10) == []


def test_embeddings_on_the_triton_kernels_match_transformers(checkpoint_factory):
    # The interpreter on CPU: a few short prompts, packed into one pass, longer than the window.
    path = checkpoint_factory(sliding_window=6, num_layers=3)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [2, 7], [1, 8, 2, 8, 1, 8, 2, 8, 4]]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the interpreter runs tiny tiles; a thread pool only adds contention
    try:
        llm = LLM(
            path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01, attention_backend="triton"
        )
        vectors = llm.embed(prompts)
    finally:
        torch.set_num_threads(previous)
    reference = load_reference(path)
    for vector, prompt in zip(vectors, prompts, strict=True):
        torch.testing.assert_close(vector, reference_embedding(reference, prompt), atol=2e-5, rtol=1e-4)

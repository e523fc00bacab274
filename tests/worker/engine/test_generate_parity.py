"""Greedy continuations of the engine equal transformers' generate(), under chunking and preemption."""

import pytest
import torch
from checkpoints import load_reference

from worker.engine import LLM, SamplingParams

NEW_TOKENS = 64


def reference_continuations(path, prompts: list[list[int]]) -> list[list[int]]:
    ref = load_reference(path)
    outs = []
    with torch.no_grad():
        for prompt in prompts:
            generated = ref.generate(
                torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False
            )
            outs.append(generated[0, len(prompt) :].tolist())
    return outs


def mixed_prompts(vocab: int, lengths=(3, 17, 9, 41, 1, 26, 33, 12)) -> list[list[int]]:
    g = torch.Generator().manual_seed(11)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.fixture(scope="module")
def case(checkpoint_factory):
    # window 8 with block size 4: most prompts are longer than the window.
    path = checkpoint_factory(sliding_window=8, num_layers=4)
    prompts = mixed_prompts(97)
    return path, prompts, reference_continuations(path, prompts)


@pytest.mark.parametrize(
    "engine_kwargs",
    [
        # chunks of 7 tokens: prompts are cut at positions that are not block-aligned
        {"block_size": 4, "max_num_batched_tokens": 7},
        {"block_size": 16, "max_num_batched_tokens": 512},
        {"block_size": 3, "max_num_batched_tokens": 13, "max_num_seqs": 3},
    ],
    ids=["chunk7-block4", "one-chunk-block16", "chunk13-block3-3seqs"],
)
def test_greedy_batch_matches_transformers(case, engine_kwargs):
    path, prompts, expected = case
    llm = LLM(path, device="cpu", dtype="float32", kv_cache_gb=0.01, **engine_kwargs)
    outs = llm.generate(
        [{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=NEW_TOKENS)
    )
    for prompt, out, want in zip(prompts, outs, expected, strict=True):
        assert out.error is None
        assert out.prompt_token_ids == prompt
        assert out.outputs[0].token_ids == want
        assert out.outputs[0].finish_reason == "length"
    llm.engine.check_integrity()
    assert llm.engine.blocks.full.num_used == 0 and llm.engine.blocks.swa.num_used == 0


def test_preemption_under_a_tiny_kv_budget_keeps_every_token(case):
    path, prompts, expected = case
    # Each request needs up to ceil((41 + 64) / 4) = 27 full blocks; 40 blocks hold barely one at a time.
    llm = LLM(
        path,
        device="cpu",
        dtype="float32",
        block_size=4,
        max_num_batched_tokens=9,
        num_full_blocks=40,
        num_swa_blocks=24,
    )
    outs = llm.generate(
        [{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=NEW_TOKENS)
    )
    assert llm.stats().num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outs] == expected
    llm.engine.check_integrity()


def test_requests_finish_at_different_times_and_stream_in_finish_order(case):
    path, prompts, expected = case
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    lengths = [5, 40, 1, 17]
    params = [SamplingParams(temperature=0, max_tokens=n) for n in lengths]
    finished = list(llm.generate_stream([{"prompt_token_ids": p} for p in prompts[:4]], params))
    assert [o.request_id for o in finished] == ["2", "0", "3", "1"]  # shortest max_tokens first
    for out in finished:
        i = int(out.request_id)
        assert out.outputs[0].token_ids == expected[i][: lengths[i]]

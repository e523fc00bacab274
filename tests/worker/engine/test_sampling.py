"""Sampling: seeds, top-k, top-p, stop tokens and strings, max_tokens, eos from the checkpoint."""

import json
from collections import Counter

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from worker.engine import LLM, SamplingParams
from worker.engine.sampler import sample
from worker.engine.sequence import Sequence


def add_word_tokenizer(path, vocab_size=97):
    """Token i is the word 'w{i}': text and ids map one to one, which makes stop strings checkable."""
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def llm(checkpoint_factory):
    path = add_word_tokenizer(checkpoint_factory(sliding_window=8))
    return LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)


PROMPT = {"prompt_token_ids": [5, 9, 14, 2, 77, 31, 8]}


def test_same_seed_same_output_whatever_the_batch(llm):
    params = SamplingParams(temperature=1.0, seed=1234, max_tokens=24)
    alone = llm.generate([PROMPT], params)[0].outputs[0].token_ids
    others = [{"prompt_token_ids": [i, i + 1, i + 2] * (i % 4 + 1)} for i in range(1, 7)]
    mixed = llm.generate(
        others[:3] + [PROMPT] + others[3:],
        [SamplingParams(temperature=0.9, max_tokens=30)] * 3
        + [params]
        + [SamplingParams(temperature=0, max_tokens=9)] * 3,
    )
    assert mixed[3].outputs[0].token_ids == alone
    other_seed = llm.generate([PROMPT], SamplingParams(temperature=1.0, seed=99, max_tokens=24))[0]
    assert other_seed.outputs[0].token_ids != alone


def test_top_k_one_and_tiny_top_p_are_greedy(llm):
    greedy = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=20))[0].outputs[0].token_ids
    top1 = llm.generate([PROMPT], SamplingParams(temperature=1.5, top_k=1, seed=3, max_tokens=20))[0]
    tiny_p = llm.generate([PROMPT], SamplingParams(temperature=1.5, top_p=1e-6, seed=3, max_tokens=20))[0]
    assert top1.outputs[0].token_ids == greedy
    assert tiny_p.outputs[0].token_ids == greedy


def _draws(logits, n=4000, **kw):
    seq = Sequence(
        "s",
        None,
        [1],
        SamplingParams(temperature=1.0, max_tokens=1, **kw),
        0,
        generator=torch.Generator().manual_seed(0),
    )
    return Counter(sample(logits[None, :], [seq])[0] for _ in range(n))


def test_top_k_and_top_p_keep_the_right_tokens_with_the_right_mass():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    counts = _draws(logits, top_k=2)
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 4000 - 0.5 / 0.8) < 0.03
    # top_p=0.7: 0.5 is not enough, so the token that crosses 0.7 (0.3) stays; 0.15 and 0.05 go.
    counts = _draws(logits, top_p=0.7)
    assert set(counts) == {0, 1}
    assert abs(counts[1] / 4000 - 0.3 / 0.8) < 0.03
    counts = _draws(logits)
    assert set(counts) == {0, 1, 2, 3}


def test_stop_token_ids_and_max_tokens(llm):
    greedy = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    assert greedy.finish_reason == "length" and len(greedy.token_ids) == 12
    stop_at = next(i for i, t in enumerate(greedy.token_ids) if t not in greedy.token_ids[:i] and i >= 3)
    out = llm.generate(
        [PROMPT], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[greedy.token_ids[stop_at]])
    )[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.stop_reason == greedy.token_ids[stop_at]
    assert out.token_ids == greedy.token_ids[: stop_at + 1]


def test_stop_strings_truncate_the_text(llm):
    greedy = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    words = greedy.text.split(" ")
    assert words == [f"w{t}" for t in greedy.token_ids]
    stop = f"{words[4]} {words[5]}"
    out = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12, stop=[stop]))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert stop not in out.text
    assert greedy.text.startswith(out.text) and len(out.text) < len(greedy.text)
    assert len(out.token_ids) <= 6


def test_eos_from_generation_config_ends_with_stop(checkpoint_factory, llm):
    greedy = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    eos = greedy.token_ids[5]
    first = greedy.token_ids.index(eos)
    path = checkpoint_factory(sliding_window=8)
    gen = json.loads((path / "generation_config.json").read_text())
    patched = path.parent / "with_eos"
    if not patched.exists():
        import shutil

        shutil.copytree(path, patched)
        gen["eos_token_id"] = eos
        (patched / "generation_config.json").write_text(json.dumps(gen))
    with_eos = LLM(patched, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    out = with_eos.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    assert out.finish_reason == "stop" and out.token_ids == greedy.token_ids[: first + 1]
    ignored = with_eos.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    assert ignored.outputs[0].token_ids == greedy.token_ids


def test_text_prompts_use_the_tokenizer(llm):
    by_text = llm.generate("w5 w9 w14 w2 w77 w31 w8", SamplingParams(temperature=0, max_tokens=6))[0]
    by_ids = llm.generate([PROMPT], SamplingParams(temperature=0, max_tokens=6))[0]
    assert by_text.prompt_token_ids == PROMPT["prompt_token_ids"]
    assert by_text.outputs[0].token_ids == by_ids.outputs[0].token_ids

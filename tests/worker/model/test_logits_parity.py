"""Our model over paged KV vs transformers' MiMoV2FlashForCausalLM: logits of prefill and every decode step."""

import pytest
import torch
from checkpoints import load_reference

from worker.engine import LLM, SamplingParams
from worker.engine.model_runner import ScheduledSeq
from worker.engine.sequence import Sequence

MAX_RELATIVE_ERROR = 1e-4


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


def engine_logits(llm: LLM, prompt: list[int], continuation: list[int], chunk: int) -> torch.Tensor:
    """Logits for every position: the prompt in chunks of ``chunk`` tokens, then one decode step per token."""
    kv, runner = llm.engine.kv, llm.engine.runner
    seq = Sequence("probe", None, list(prompt), SamplingParams(temperature=0, max_tokens=1), 0)
    rows = []

    def run(num_tokens: int, all_logits: bool):
        assert kv.grow(seq, num_tokens)
        out = runner.execute([ScheduledSeq(seq, num_tokens)], all_logits=all_logits)
        rows.append(out.all_rows if all_logits else out.sampled)
        kv.advance(seq, num_tokens)
        kv.check_integrity([seq])

    while seq.num_computed_tokens < len(prompt):
        run(min(chunk, len(prompt) - seq.num_computed_tokens), all_logits=True)
    for token in continuation:
        seq.token_ids.append(token)
        run(1, all_logits=False)
    kv.release(seq, preempted=False)
    return torch.cat(rows)


SHAPES = {
    "moe-gqa4-window8": {},
    "dense-window1": {"sliding_window": 1, "mlp_layer_types": ["dense"] * 4},
    "window-longer-than-prompts": {"sliding_window": 200},
    "window3-mha-swa": {
        "sliding_window": 3,
        "num_kv_heads": 2,
        "num_heads": 4,
        "head_dim": 14,
        "v_head_dim": 6,
    },
    "gqa2-odd-dims-tied": {
        "num_heads": 6,
        "num_kv_heads": 3,
        "head_dim": 10,
        "v_head_dim": 7,
        "tie_word_embeddings": True,
        "sliding_window": 5,
    },
    "two-full-layers-grouped-router": {
        "num_layers": 5,
        "layer_types": [
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "full_attention",
            "sliding_attention",
        ],
        "num_experts": 8,
        "experts_per_tok": 3,
        "n_group": 4,
        "topk_group": 2,
        "attention_value_scale": 1.3,
    },
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("chunk", [5, 64])
def test_prefill_and_decode_logits_match_transformers(checkpoint_factory, shape, chunk):
    path = checkpoint_factory(**SHAPES[shape])
    ref = load_reference(path)
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    generator = torch.Generator().manual_seed(7)
    vocab = llm.config.vocab_size
    prompt = torch.randint(0, vocab, (23,), generator=generator).tolist()
    continuation = torch.randint(0, vocab, (12,), generator=generator).tolist()
    with torch.no_grad():
        expected = ref(torch.tensor([prompt + continuation])).logits[0].float()
    got = engine_logits(llm, prompt, continuation, chunk)
    assert got.shape == expected.shape
    # Prefill rows, then each decode step on its own, so a bad step cannot hide in an average.
    assert relative_error(got[: len(prompt)], expected[: len(prompt)]) <= MAX_RELATIVE_ERROR
    for step in range(len(continuation)):
        row = len(prompt) + step
        assert relative_error(got[row], expected[row]) <= MAX_RELATIVE_ERROR, f"decode step {step}"


def test_parity_test_detects_a_wrong_window(checkpoint_factory):
    """The comparison is sharp: serving the same weights with a window one token shorter fails it."""
    path = checkpoint_factory(sliding_window=6)
    ref = load_reference(path)
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    for layer in llm.model.layers:
        if layer.attn.window:
            layer.attn.window = 5
    prompt = list(range(3, 40))
    with torch.no_grad():
        expected = ref(torch.tensor([prompt])).logits[0]
    got = engine_logits(llm, prompt, [], chunk=64)
    assert relative_error(got, expected) > 1e-3

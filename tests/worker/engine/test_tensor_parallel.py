"""Tensor and expert parallel on CPU over gloo: N rank processes give what one rank gives.

Tolerance: fp32 everywhere; a sharded layer sums its partial products across ranks in a different
order than one matmul does, so prompt log-probabilities agree to 1e-4 absolute (they differ by
~1e-6 in practice), and greedy tokens are equal. Prompts share prefixes and the step budget is 16
tokens, so prefix-cache hits and chunked prefill are both on the path.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from worker.engine import LLM, EngineFailure, SamplingParams
from worker.model.config import CheckpointError
from worker.model.quantize import quantize_checkpoint

PREFIX = list(range(3, 43))
PROMPTS = [PREFIX + [50, 51, 52], PREFIX + [60, 61], list(range(20, 45)), PREFIX + [50, 51, 52, 53, 54]]
GREEDY = SamplingParams(temperature=0.0, max_tokens=10, prompt_logprobs=True)
LOGPROB_TOLERANCE = 1e-4
# hidden 256 with 4 heads of 64: every rank's columns of o_proj and down start on a 128-wide
# FP8 scale block at TP=2, so those stay FP8 (the default tiny widths cannot, and fall back)
ALIGNED = {"hidden_size": 256, "head_dim": 64, "v_head_dim": 64, "num_kv_heads": 2}


def engine(path, **kwargs) -> LLM:
    return LLM(
        path,
        device="cpu",
        dtype="float32",
        enable_prefix_caching=True,
        max_num_batched_tokens=16,
        **kwargs,
    )


def run(llm: LLM, prompts=PROMPTS, params=GREEDY):
    return llm.generate(prompts, params)


def assert_same(expected, got):
    for want, have in zip(expected, got, strict=True):
        assert have.error is None, have.error
        assert have.outputs[0].token_ids == want.outputs[0].token_ids
        assert have.num_cached_tokens == want.num_cached_tokens
        diff = torch.tensor(have.prompt_logprobs) - torch.tensor(want.prompt_logprobs)
        assert float(diff.abs().max()) <= LOGPROB_TOLERANCE


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory):
    # Two full-attention KV heads (split at TP=2), four sliding ones; 97 words: the vocabulary pads.
    return checkpoint_factory(num_kv_heads=2)


@pytest.fixture(scope="module")
def single(checkpoint):
    llm = engine(checkpoint)
    yield llm, run(llm)
    llm.close()


@pytest.mark.parametrize("expert_parallel", [False, True], ids=["tp2", "tp2-ep2"])
def test_two_ranks_match_one(checkpoint, single, expert_parallel):
    _, expected = single
    assert sum(out.num_cached_tokens for out in expected) > 0  # the cache is on the path
    llm = engine(checkpoint, tensor_parallel_size=2, expert_parallel=expert_parallel)
    try:
        moe = llm.model.layers[1].mlp
        experts_held = moe.gate_up.weight.shape[0]
        assert experts_held == (2 if expert_parallel else 4)
        assert llm.model.layers[1].attn.num_heads == 2
        assert_same(expected, run(llm))
        # A second call hits what the first cached, on both ranks' heads.
        again = run(llm, [PREFIX + [50, 51, 52, 53]])
        assert again[0].num_cached_tokens >= 32
        assert (
            again[0].outputs[0].token_ids
            == run(single[0], [PREFIX + [50, 51, 52, 53]])[0].outputs[0].token_ids
        )
    finally:
        llm.close()


def test_replicated_kv_heads(checkpoint_factory):
    """One full-attention KV head and two ranks: each rank holds a copy of it (as TP=8 on
    MiMo-V2-Flash's four), the sliding layers' two heads are split."""
    path = checkpoint_factory(num_kv_heads=1)
    one = engine(path)
    expected = run(one)
    one.close()
    llm = engine(path, tensor_parallel_size=2)
    try:
        assert llm.model.kv_config.num_kv_heads_full == 1 and llm.model.kv_config.num_kv_heads_swa == 1
        assert_same(expected, run(llm))
    finally:
        llm.close()


def test_kv_moves_between_tiers_rank_by_rank(checkpoint):
    """A device pool of 6 full blocks: the first call's blocks are evicted to host memory by the
    next calls, each rank's heads by that rank, and the last call's prefix comes back from there."""
    tight = {"num_full_blocks": 6, "num_swa_blocks": 8, "host_cache_gb": 0.01}
    calls = [[PREFIX + [50]], [list(range(60, 95))], [list(range(10, 40))], [PREFIX + [51]]]
    one = engine(checkpoint, **tight)
    expected = [run(one, prompts) for prompts in calls]
    host_hits = one.cache_metrics().hit_tokens_host
    one.close()
    assert host_hits > 0
    llm = engine(checkpoint, tensor_parallel_size=2, **tight)
    try:
        for prompts, want in zip(calls, expected, strict=True):
            assert_same(want, run(llm, prompts))
            llm.engine.check_integrity()
        assert llm.cache_metrics().hit_tokens_host == host_hits
    finally:
        llm.close()


@pytest.mark.parametrize("widths", ["aligned", "unaligned"])
def test_fp8_with_two_ranks(checkpoint_factory, tmp_path, widths):
    src = checkpoint_factory(**ALIGNED) if widths == "aligned" else checkpoint_factory(num_kv_heads=2)
    quantize_checkpoint(src, tmp_path / "fp8")
    one = engine(tmp_path / "fp8")
    expected = run(one)
    one.close()
    llm = engine(tmp_path / "fp8", tensor_parallel_size=2)
    try:
        layer = llm.model.layers[1]
        assert layer.attn.qkv.weight.dtype == torch.float8_e4m3fn  # row cuts keep FP8 at any width
        row_parallel = torch.float8_e4m3fn if widths == "aligned" else torch.float32
        assert layer.attn.o_proj.weight.dtype == row_parallel and layer.mlp.down.weight.dtype == row_parallel
        assert_same(expected, run(llm))
    finally:
        llm.close()


def test_a_dead_rank_fails_the_engine_with_its_name(checkpoint):
    llm = engine(checkpoint, tensor_parallel_size=2)
    try:
        assert run(llm, PROMPTS[:1])[0].error is None
        follower = llm.followers.processes[0]
        follower.kill()
        follower.join(timeout=10)
        with pytest.raises(EngineFailure, match=r"rank 1 \(pid \d+\) exited with signal 9"):
            run(llm)
        with pytest.raises(EngineFailure, match="broken"):  # and it stays failed
            run(llm, PROMPTS[:1])
    finally:
        llm.close()


def test_a_rank_that_cannot_load_fails_the_start(checkpoint, tmp_path):
    """Expert 3 of layer 1 has a wrong shape: rank 0 (experts 0-1) never reads it, rank 1 does."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in checkpoint.iterdir():
        if item.name != "model.safetensors":
            (broken / item.name).symlink_to(item)
    tensors = load_file(checkpoint / "model.safetensors")
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(
        EngineFailure, match=f"rank 1 failed loading its shard: CheckpointError: tensor {name}"
    ):
        engine(broken, tensor_parallel_size=2, expert_parallel=True)


def test_shapes_that_do_not_divide_are_refused_before_any_rank_starts(checkpoint_factory, tmp_path):
    path = checkpoint_factory(num_kv_heads=2)
    with pytest.raises(
        CheckpointError, match=r"num_attention_heads \(4\) is not divisible by tensor_parallel_size 3"
    ):
        engine(path, tensor_parallel_size=3)
    config = json.loads((path / "config.json").read_text())
    assert config["n_routed_experts"] == 4
    with pytest.raises(CheckpointError, match=r"n_routed_experts \(expert parallel\) \(4\)"):
        engine(path, tensor_parallel_size=8, expert_parallel=True)

"""Checkpoint loading: shards, MTP weights, and clear errors for what cannot be served."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from worker.engine import LLM, SamplingParams
from worker.model.config import CheckpointError
from worker.model.loader import load_model, parse_dtype


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst)
    return dst


def greedy(path, prompt=(4, 8, 15, 16, 23, 42)):
    llm = LLM(path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    return llm.generate([{"prompt_token_ids": list(prompt)}], SamplingParams(temperature=0, max_tokens=10))[0]


def test_sharded_checkpoint_with_mtp_weights_loads_like_the_single_file(tiny_checkpoint, tmp_path):
    tensors = load_file(tiny_checkpoint / "model.safetensors")
    sharded = copy_checkpoint(tiny_checkpoint, tmp_path / "sharded")
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in halves.items():
        extra = (
            {"model.mtp.layers.0.proj.weight": torch.ones(3, 3)} if shard.startswith("model-00002") else {}
        )
        save_file({n: tensors[n] for n in shard_names} | extra, sharded / shard)
        weight_map |= {n: shard for n in [*shard_names, *extra]}
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    assert greedy(sharded).outputs[0].token_ids == greedy(tiny_checkpoint).outputs[0].token_ids


def test_unsupported_model_type(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "llama")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'llama'"):
        LLM(path, device="cpu")


def test_missing_tensor_is_named(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "missing")
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.2.self_attn.attention_sink_bias"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"missing tensor model\.layers\.2\.self_attn\.attention_sink_bias"
    ):
        load_model(path, torch.float32, torch.device("cpu"))


def test_misshaped_tensor_names_both_shapes(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path / "misshaped")
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(5, 48)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"k_proj\.weight has shape \(5, 48\), expected \(24, 48\)"):
        load_model(path, torch.float32, torch.device("cpu"))


def test_unknown_dtype():
    with pytest.raises(CheckpointError, match="unknown dtype 'float8'"):
        parse_dtype("float8")
    assert parse_dtype("bf16") is torch.bfloat16


def test_bf16_and_fp16_run_and_mostly_agree_with_fp32(tiny_checkpoint):
    prompt = {"prompt_token_ids": [4, 8, 15, 16, 23, 42]}
    ref = greedy(tiny_checkpoint).outputs[0].token_ids
    for dtype in ("bfloat16", "float16"):
        llm = LLM(tiny_checkpoint, device="cpu", dtype=dtype, block_size=4, kv_cache_gb=0.01)
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=10))[0].outputs[0].token_ids
        assert len(out) == 10
        assert out[:2] == ref[:2]

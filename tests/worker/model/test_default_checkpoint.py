"""The shipped default checkpoint (worker/model/checkpoints/hybatch-tiny) has the promised shape.

Reads only JSON, the safetensors header and the tokenizer: no torch, no transformers.
"""

import json
from pathlib import Path

import jinja2
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

CHECKPOINT_DIR = Path(__file__).resolve().parents[3] / "worker" / "model" / "checkpoints" / "hybatch-tiny"
MAX_WEIGHTS_BYTES = 25 * 1000 * 1000
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

PYTHON_SAMPLE = (
    '''\
# -*- coding: utf-8 -*-
"""Docstring with unicode: café, 東京, emoji 🐍."""
import os


class Tree:
\tdef __init__(self, children=()):  # a tab-indented line
\t\tself.children = list(children)


def walk(node, depth=0):
    """Yield (depth, node) pairs."""
    yield depth, node
    for child in node.children:
        yield from walk(child, depth + 1)



if __name__ == "__main__":
    print(f"{os.sep!r:>10}\\n", end="")
'''
    + "total = 0  # three trailing spaces follow   \n\n"
)


def _read_json(name: str) -> dict:
    return json.loads((CHECKPOINT_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def config() -> dict:
    return _read_json("config.json")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(CHECKPOINT_DIR / "tokenizer.json"))


def test_layers_are_one_full_per_seven_sliding_window(config):
    layer_types = config["layer_types"]
    assert config["model_type"] == "mimo_v2_flash"
    assert len(layer_types) == config["num_hidden_layers"] == 8
    assert layer_types == ["full_attention"] + ["sliding_attention"] * 7
    assert config["sliding_window"] == 128


def test_qk_head_dim_differs_from_v_head_dim(config):
    assert config["head_dim"] != config["v_head_dim"]


def test_moe_in_most_layers_with_valid_groups(config):
    mlp_layer_types = config["mlp_layer_types"]
    assert mlp_layer_types.count("sparse") > len(mlp_layer_types) // 2
    experts_per_group = config["n_routed_experts"] // config["n_group"]
    # The router scores a group by its top-2 experts.
    assert config["n_routed_experts"] % config["n_group"] == 0 and experts_per_group >= 2
    assert config["topk_group"] * experts_per_group >= config["num_experts_per_tok"]


def test_special_token_ids_match_tokenizer(config, tokenizer):
    assert config["vocab_size"] == tokenizer.get_vocab_size()
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3]
    assert config["eos_token_id"] == config["bos_token_id"] == ids[0]
    assert config["pad_token_id"] == ids[3]
    generation = _read_json("generation_config.json")
    assert config["eos_token_id"] in generation["eos_token_id"]


def test_weights_fit_the_size_budget():
    assert (CHECKPOINT_DIR / "model.safetensors").stat().st_size <= MAX_WEIGHTS_BYTES


def test_sliding_window_layers_have_sinks_and_doubled_kv_heads(config):
    head_dim = config["head_dim"]
    with safe_open(str(CHECKPOINT_DIR / "model.safetensors"), framework="numpy") as weights:
        names = set(weights.keys())
        for layer, layer_type in enumerate(config["layer_types"]):
            prefix = f"model.layers.{layer}.self_attn."
            kv_heads = weights.get_slice(prefix + "k_proj.weight").get_shape()[0] // head_dim
            if layer_type == "sliding_attention":
                assert kv_heads == 2 * config["num_key_value_heads"]
                assert prefix + "attention_sink_bias" in names
            else:
                assert kv_heads == config["num_key_value_heads"]
                assert prefix + "attention_sink_bias" not in names


def test_tokenizer_round_trips_python_source(tokenizer):
    for text in (PYTHON_SAMPLE, Path(__file__).read_text(encoding="utf-8")):
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_special_tokens_encode_as_single_ids(tokenizer):
    for token_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.encode(token).ids == [token_id]


def test_chat_template_renders_chatml():
    tokenizer_config = _read_json("tokenizer_config.json")
    assert tokenizer_config["eos_token"] == "<|endoftext|>"
    assert tokenizer_config["pad_token"] == "<|pad|>"
    template = jinja2.Environment().from_string(tokenizer_config["chat_template"])
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Sort a list."},
    ]
    rendered = template.render(messages=messages, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou write Python.<|im_end|>\n"
        "<|im_start|>user\nSort a list.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert not template.render(messages=messages, add_generation_prompt=False).endswith("assistant\n")

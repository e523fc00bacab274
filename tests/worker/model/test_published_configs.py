"""The published MiMo-V2 config.json files (transcribed fixtures: see fixtures/published/README.md) load,
and random weights in the published checkpoint layout, at tiny width, map onto our model."""

import json
import logging
from pathlib import Path

import pytest
import torch
from model_probe import prefill_logits
from transformers import MiMoV2FlashConfig, MiMoV2FlashForCausalLM

from worker.model.config import FULL, SLIDING, CheckpointError, ModelConfig
from worker.model.fp8_format import BlockFP8Format
from worker.model.hub_layout import write_random_checkpoint
from worker.model.loader import load_model
from worker.model.quantize import dequantize_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "published"
FLASH, PRO = "MiMo-V2-Flash", "MiMo-V2.5-Pro"
FLASH_FULL_LAYERS = (0, 5, 11, 17, 23, 29, 35, 41, 47)  # layer 0, then every 6th: 1 full : 5 SWA
PRO_FULL_LAYERS = (0, 7, 14, 21, 28, 35, 42, 49, 56, 63)
PROMPT = list(range(3, 40))


def published(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def test_flash_reads_as_published():
    c = ModelConfig.from_dict(published(FLASH))
    assert c.num_layers == 48 and c.full_layers == FLASH_FULL_LAYERS and len(c.swa_layers) == 39
    assert c.sliding_window == 129  # sliding_window_size 128 keys before the query, plus the query
    assert (c.num_attention_heads, c.num_kv_heads_full, c.num_kv_heads_swa) == (64, 4, 8)
    assert (c.head_dim, c.v_head_dim, c.hidden_size, c.vocab_size) == (192, 128, 4096, 152576)
    assert (c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size) == (256, 8, 2048)
    assert c.mlp_layer_types == ("dense",) + ("sparse",) * 47
    assert (c.rope[FULL].theta, c.rope[SLIDING].theta, c.rope[FULL].partial_rotary_factor) == (
        5e6,
        1e4,
        0.334,
    )
    assert c.routed_scaling_factor == 1.0 and c.rms_norm_eps == 1e-5
    assert c.quantization == BlockFP8Format(128, 128) and c.num_mtp_layers == 3


def test_flash_reads_as_transformers_reads_it():
    ours, theirs = ModelConfig.from_dict(published(FLASH)), MiMoV2FlashConfig(**published(FLASH))
    assert list(ours.layer_types) == theirs.layer_types
    assert list(ours.mlp_layer_types) == theirs.mlp_layer_types
    assert ours.sliding_window == theirs.sliding_window
    for kind in (FULL, SLIDING):
        assert ours.rope[kind].theta == theirs.rope_parameters[kind]["rope_theta"]
    assert ours.attention_value_scale == theirs.attention_value_scale


def test_pro_reads_its_hybrid_layer_pattern():
    c = ModelConfig.from_dict(published(PRO))
    assert c.num_layers == 70 and c.full_layers == PRO_FULL_LAYERS and len(c.swa_layers) == 60
    assert (c.num_kv_heads_full, c.num_kv_heads_swa, c.sliding_window) == (8, 16, 129)
    # Why we read hybrid_layer_pattern: transformers' default pattern puts 12 full layers in 70.
    assert MiMoV2FlashConfig(**published(PRO)).layer_types.count(FULL) == 12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"swa_head_dim": 128}, "swa_head_dim 128 is not supported"),
        ({"swa_num_key_value_heads": 4}, "swa_num_key_value_heads 4 is not supported"),
        ({"add_full_attention_sink_bias": True}, "add_full_attention_sink_bias true is not supported"),
        ({"n_shared_experts": 1}, "n_shared_experts 1 is not supported"),
        ({"scoring_func": "softmax"}, "scoring_func 'softmax' is not supported"),
        ({"layer_types": ["full_attention"] * 48}, "hybrid_layer_pattern and layer_types disagree"),
        ({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3"}}, "weight_block_size"),
    ],
)
def test_fields_we_would_misread_are_refused(change, message):
    with pytest.raises(CheckpointError, match=message):
        ModelConfig.from_dict(published(FLASH) | change)


def tiny(name: str) -> dict:
    """The published structure (layer count and pattern, MoE layout, MTP layers, FP8 format), narrow."""
    raw = published(name)
    kv = raw["num_key_value_heads"] // 4  # Flash 1, Pro 2: the published ratio between them
    return raw | {
        "hidden_size": 64,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "num_attention_heads": 4,
        "swa_num_attention_heads": 4,
        "num_key_value_heads": kv,
        "swa_num_key_value_heads": 2 * kv,
        "head_dim": 24,
        "swa_head_dim": 24,
        "v_head_dim": 16,
        "swa_v_head_dim": 16,
        "vocab_size": 256,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "sliding_window": 7,
        "sliding_window_size": 7,
        "max_position_embeddings": 4096,
    }


@pytest.mark.parametrize("name", [FLASH, PRO])
def test_published_layout_at_tiny_width_matches_transformers(name, tmp_path, caplog):
    """Every tensor of the layout is loaded, MTP layers are skipped (counted), projections stay FP8,
    and the logits match transformers on the dequantized weights (relative 1e-4, as test_fp8)."""
    raw = tiny(name)
    path = write_random_checkpoint(raw, tmp_path / "fp8", dtype=torch.float32, max_shard_bytes=400_000)
    assert (path / "model.safetensors.index.json").is_file()
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    mtp = [n for n in weight_map if n.startswith("model.mtp.layers.")]
    assert {n.split(".")[3] for n in mtp} == {"0", "1", "2"}
    with caplog.at_level(logging.INFO, logger="worker.model.loader"):
        model = load_model(path, torch.float32, torch.device("cpu"))
    assert f"skipping {len(mtp)} MTP tensors" in caplog.text
    assert "ignoring" not in caplog.text  # every other tensor of the layout was used
    for layer in model.layers:
        assert layer.attn.qkv.weight.dtype == layer.mlp.down.weight.dtype == torch.float8_e4m3fn
    dequantize_checkpoint(path, tmp_path / "deq", dtype=torch.float32)
    # transformers reads layer_types only (see test_pro_reads_its_hybrid_layer_pattern): spell it out
    pattern = raw["hybrid_layer_pattern"]
    reference_config = json.loads((tmp_path / "deq" / "config.json").read_text()) | {
        "layer_types": ["sliding_attention" if p else "full_attention" for p in pattern]
    }
    (tmp_path / "deq" / "config.json").write_text(json.dumps(reference_config))
    reference = MiMoV2FlashForCausalLM.from_pretrained(tmp_path / "deq", dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(torch.tensor([PROMPT])).logits[0].float()
    got = prefill_logits(model, PROMPT)
    assert float((got - expected).abs().max() / expected.abs().max()) <= 1e-4

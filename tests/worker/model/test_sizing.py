"""The hardware table's arithmetic against figures computed by hand."""

import json
from pathlib import Path

from worker.model.config import ModelConfig
from worker.model.hub_layout import checkpoint_layout
from worker.model.sizing import GPUS, fit, kv_bytes_per_token, smallest_fit, weight_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "published"


def published(name: str) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((FIXTURES / name / "config.json").read_text()))


def test_kv_bytes_per_token_by_hand():
    flash, pro = published("MiMo-V2-Flash"), published("MiMo-V2.5-Pro")
    assert kv_bytes_per_token(flash, sliding=False) == 9 * 4 * (192 + 128) * 2 == 23_040
    assert kv_bytes_per_token(flash, sliding=True) == 39 * 8 * (192 + 128) * 2 == 199_680
    assert kv_bytes_per_token(pro, sliding=False) == 10 * 8 * 320 * 2 == 51_200
    # 8 ranks over Flash's 4 full-layer KV heads: every head is held twice
    assert kv_bytes_per_token(flash, sliding=False, num_gpus=8) == 2 * 23_040


def test_flash_parameter_count_by_hand():
    # embed + lm_head 2 x 152576 x 4096 = 1,249,902,592
    # attention: full (q 4096x12288, k 4096x768, v 4096x512, o 8192x4096) = 89,128,960 x 9
    #            SWA  (k, v doubled: 4096x1536, 4096x1024) = 94,371,840 x 39     -> 4,482,662,400
    # MoE layers: 256 x 3 x 4096 x 2048 + router 256 x 4096 + bias 256 = 6,443,499,776 x 47
    # dense layer 0: 3 x 4096 x 16384 = 201,326,592; norms 97 x 4096; sinks 39 x 64
    expected = 1_249_902_592 + 4_482_662_400 + 47 * 6_443_499_776 + 201_326_592 + 97 * 4096 + 39 * 64
    layout = checkpoint_layout(published("MiMo-V2-Flash"))
    params = 0
    for name, spec in layout.items():
        if not name.startswith("model.mtp."):
            n = 1
            for d in spec.shape:
                n *= d
            params += n
    assert params == expected == 308_778_780_864


def test_weight_bytes_of_a_small_config_by_hand():
    config = ModelConfig.from_dict(
        {
            "model_type": "mimo_v2_flash",
            "vocab_size": 10,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 1,
            "layer_types": ["full_attention"],
            "mlp_layer_types": ["dense"],
            "num_attention_heads": 1,
            "num_key_value_heads": 1,
            "head_dim": 128,
            "v_head_dim": 128,
        }
    )
    # embed, lm_head 2 x 10 x 128 x 2 B; norms 3 x 128 x 2 B
    floats = 2 * 2560 + 768
    # FP8: q, k, v, o 128x128 = 16,384 B + one 4-byte scale; gate, up 256x128 and down 128x256 =
    # 32,768 B + two scales each
    assert weight_bytes(config, fp8=True) == floats + 4 * 16_388 + 3 * 32_776 == 169_768
    assert weight_bytes(config, fp8=False) == floats + 2 * (4 * 16_384 + 3 * 32_768) == 333_568


def test_fit_counts_tokens_as_full_kv_plus_one_window_per_8k_prefix():
    flash = published("MiMo-V2-Flash")
    h200 = next(g for g in GPUS if g.name.startswith("H200"))
    # FP8 weights ~310 GB; usable per H200 0.9 x 139.8 GiB - 4 GiB = ~130.8 GB: 2 GPUs hold 261 GB, 4 hold 523
    smallest = smallest_fit(flash, h200, fp8=True)
    assert smallest.num_gpus == 4
    assert fit(flash, h200, 2, fp8=True) is None
    # per token: full 23,040 B + SWA 199,680 B x 128 window tokens / 8192 = 3,120 B -> 26,160 B
    assert smallest.cached_tokens == int(smallest.kv_budget_bytes / 26_160)
    assert smallest.cached_tokens_every_layer == smallest.kv_budget_bytes // (23_040 + 199_680)

"""How ``plan_layout`` splits a KV budget between the full-attention and sliding-window pools."""

import pytest
import torch

from worker.engine.kv_layout import DEFAULT_SWA_SHARE, plan_layout
from worker.model.config import ModelConfig

MiB = 1024**2


def config(layer_types: list[str]) -> ModelConfig:
    # 2 KV heads on full layers, 4 on SWA layers (twice, as in MiMo-V2), q/k 64 and v 32, window 32.
    return ModelConfig.from_dict(
        {
            "model_type": "mimo_v2_flash",
            "num_hidden_layers": len(layer_types),
            "layer_types": layer_types,
            "mlp_layer_types": ["dense"] * len(layer_types),
            "num_key_value_heads": 2,
            "head_dim": 64,
            "v_head_dim": 32,
            "sliding_window": 32,
            "vocab_size": 128,
            "max_position_embeddings": 4096,
        }
    )


HYBRID = config(["full_attention", "sliding_attention", "sliding_attention", "sliding_attention"])
# Per 16-token block, fp32: full 1 layer x 2 heads x (64 + 32) x 4 B x 16 = 12,288 B;
# SWA 3 layers x 4 heads x 96 x 4 B x 16 = 73,728 B.
FULL_BLOCK, SWA_BLOCK = 12_288, 73_728


def layout(model=HYBRID, budget=64 * MiB, **options):
    options = {"block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 64} | options
    return plan_layout(model, torch.float32, kv_cache_bytes=budget, **options)


def test_block_bytes_by_hand():
    planned = layout()
    assert (planned.full_block_bytes, planned.swa_block_bytes) == (FULL_BLOCK, SWA_BLOCK)


def test_the_swa_pool_gets_its_share_of_the_bytes_and_the_full_pool_the_rest():
    assert DEFAULT_SWA_SHARE == 0.5
    planned = layout()
    assert planned.num_swa_blocks == 32 * MiB // SWA_BLOCK == 455
    assert planned.num_full_blocks == (64 * MiB - 455 * SWA_BLOCK) // FULL_BLOCK == 2731
    shifted = layout(swa_share=0.75)
    assert shifted.num_swa_blocks == 48 * MiB // SWA_BLOCK == 682
    assert shifted.num_full_blocks == (64 * MiB - 682 * SWA_BLOCK) // FULL_BLOCK == 1369


def test_a_small_share_still_fits_the_running_sequences_windows_up_to_half():
    # 4 sequences x (2 blocks of window + 2) + a 64-token chunk (4 blocks) = 20 SWA blocks, more
    # than 1% of 64 MiB (9 blocks); 400 sequences would need 1,604, more than half (455).
    assert layout(swa_share=0.01).num_swa_blocks == 20
    assert layout(swa_share=0.01, max_num_seqs=400).num_swa_blocks == 455


def test_one_kind_of_layer_takes_the_whole_budget():
    full_only = layout(config(["full_attention"] * 2))
    assert (full_only.num_full_blocks, full_only.num_swa_blocks) == (64 * MiB // (2 * FULL_BLOCK), 0)
    swa_only = layout(config(["sliding_attention"] * 3))
    assert (swa_only.num_full_blocks, swa_only.num_swa_blocks) == (0, 64 * MiB // SWA_BLOCK)


def test_overrides_and_refusals():
    assert layout(num_swa_blocks=7).num_swa_blocks == 7
    assert layout(num_swa_blocks=7).num_full_blocks == (64 * MiB - 7 * SWA_BLOCK) // FULL_BLOCK
    for share in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="swa_share"):
            layout(swa_share=share)
    with pytest.raises(ValueError, match="no full-attention block"):
        layout(budget=SWA_BLOCK + FULL_BLOCK // 2, swa_share=0.99)
    with pytest.raises(ValueError, match="no sliding-window block"):
        layout(budget=SWA_BLOCK // 2, max_num_seqs=0)

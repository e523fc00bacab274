"""``hybatch bench prefill``: the FLOPs arithmetic by hand, and an end-to-end run at a tiny shape."""

import pytest

from worker.bench import prefill
from worker.model.config import ModelConfig


def test_flops_per_token_by_hand():
    config = ModelConfig.from_dict(
        {
            "model_type": "mimo_v2_flash",
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "layer_types": ["full_attention", "sliding_attention"],
            "mlp_layer_types": ["dense", "dense"],
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 4,
            "v_head_dim": 2,
            "sliding_window": 4,
        }
    )
    flops = prefill.flops_per_token(config, prompt_len=10)
    # linear per layer: q 8x8, k+v 8 x kv_heads x 6, o 4x8, MLP 3 x 8x16, 2 FLOPs each
    full_linear = 2 * (64 + 8 * 6 + 32 + 384)
    swa_linear = 2 * (64 + 8 * 12 + 32 + 384)
    assert flops.linear == full_linear + swa_linear
    # keys per query: full (10 + 1) / 2 = 5.5; window 4: (1 + 2 + 3 + 4 + 6 x 4) / 10 = 3.4
    assert flops.attention == pytest.approx(2 * 2 * 6 * (5.5 + 3.4))


def test_bench_runs_all_three_models(capsys):
    ratios = prefill.main(
        ["--lengths", "40", "--hidden", "16", "--intermediate", "16", "--heads", "2", "--head-dim", "16",
         "--v-head-dim", "8", "--window", "7", "--chunk", "16", "--threads", "1"]
    )  # fmt: skip
    out = capsys.readouterr().out
    for name in ("hybrid-70", "full-70", "full-10"):
        assert f"| 40 | {name} |" in out
    assert ratios[40]["speedup_vs_full_70"] > 0
    # 40 tokens, window 8: 70 full layers do more attention than 10 full + 60 SWA
    assert ratios[40]["flops_full_70_vs_hybrid"] > 1


def test_flops_only_at_the_issue_lengths_shows_the_claim():
    """Analytic: at 32K the hybrid's attention FLOPs are within 5% of the 10-layer full model's."""
    ratios = prefill.main(["--flops-only", "--lengths", "2048,32768", "--variants", "full-10"])
    assert ratios[32768]["time_vs_full_10"] is None
    assert (
        1.0 < ratios[32768]["attention_flops_vs_full_10"] < 1.05 < ratios[2048]["attention_flops_vs_full_10"]
    )

"""How the published MiMo-V2 models shard: what each rank holds at TP=4 and TP=8, and that the FP8
checkpoints stay FP8 on every rank (plain arithmetic on the configs; no process is started)."""

import json
from pathlib import Path

import pytest

from worker.model.config import CheckpointError, ModelConfig
from worker.model.fp8_format import BlockFP8Format
from worker.model.shard_cuts import Cut, fp8_column_cut_aligned, linear_cuts
from worker.model.tensor_parallel import TensorParallel, check_shardable, local_kv_config

FIXTURES = Path(__file__).parent / "fixtures" / "published"
BLOCKS = BlockFP8Format(128, 128)


class _NoComm:
    def all_reduce(self, x):
        raise AssertionError("no collective in a shape test")

    all_gather = all_reduce


def config(name: str) -> ModelConfig:
    return ModelConfig.from_dict(json.loads((FIXTURES / name / "config.json").read_text()))


def test_flash_at_tp8_replicates_its_four_full_attention_kv_heads():
    flash = config("MiMo-V2-Flash")
    assert (flash.num_kv_heads_full, flash.num_kv_heads_swa) == (4, 8)
    check_shardable(flash, 8, expert_parallel=True)
    held = [TensorParallel(rank, 8, True, _NoComm()).kv_heads(4) for rank in range(8)]
    assert held == [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (3, 4), (3, 4)]
    # rank r's query heads [8r, 8r + 8) read KV head 8r // 16 (64 query heads over 4 KV heads)
    assert all(lo == (8 * rank) // 16 for rank, (lo, _) in enumerate(held))
    kv = local_kv_config(flash, 8)
    assert (kv.num_kv_heads_full, kv.num_kv_heads_swa) == (1, 1)


@pytest.mark.parametrize("name", ["MiMo-V2-Flash", "MiMo-V2.5-Pro"])
@pytest.mark.parametrize("size", [2, 4, 8])
@pytest.mark.parametrize("expert_parallel", [False, True])
def test_published_models_stay_fp8_on_every_rank(name, size, expert_parallel):
    model = config(name)
    check_shardable(model, size, expert_parallel)
    for rank in range(size):
        tp = TensorParallel(rank, size, expert_parallel, _NoComm())
        for layer in (model.full_layers[0], model.swa_layers[0]):
            for linear in ("attn.qkv", "attn.o_proj", "mlp.gate_up", "mlp.down"):
                assert fp8_column_cut_aligned(linear_cuts(model, tp, layer, linear), BLOCKS)


def test_cuts_are_hand_computed_for_flash_rank_3_of_8():
    flash = config("MiMo-V2-Flash")
    tp = TensorParallel(3, 8, True, _NoComm())
    full = flash.full_layers[0]
    # q: heads [24, 32) x 192; k/v: the one KV head 3 * 4 // 8 = 1 (replicated), 192 and 128 wide
    assert linear_cuts(flash, tp, full, "attn.qkv") == [
        Cut(0, 24 * 192, 32 * 192, 64 * 192),
        Cut(0, 192, 384, 4 * 192),
        Cut(0, 128, 256, 4 * 128),
    ]
    assert linear_cuts(flash, tp, full, "attn.o_proj") == [Cut(1, 24 * 128, 32 * 128, 64 * 128)]
    assert tp.experts(256) == (96, 128)  # whole experts, so no cut inside one
    assert linear_cuts(flash, tp, flash.mlp_layer_types.index("sparse"), "mlp.down") == [None]


def test_sizes_that_do_not_divide_name_every_problem():
    flash = config("MiMo-V2-Flash")
    with pytest.raises(CheckpointError) as error:
        check_shardable(flash, 3, expert_parallel=True)
    message = str(error.value)
    for part in (
        "num_attention_heads (64)",
        "full-attention KV heads (4)",
        "n_routed_experts (expert parallel) (256)",
    ):
        assert part in message

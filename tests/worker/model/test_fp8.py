"""FP8 block-scaled checkpoints: the format we write, the loader keeping it in FP8, logits vs transformers.

Tolerance: our fp32 logits from the FP8 checkpoint vs transformers' fp32 logits from the same weights
dequantized (``dequantize_checkpoint``) agree to a relative 1e-4 of the largest logit, as the float
checkpoints do (``test_logits_parity``): the CPU path dequantizes each weight to exactly the values
transformers sees, so only summation order differs.
"""

import json

import pytest
import torch
from checkpoints import load_reference
from model_probe import prefill_logits
from safetensors.torch import load_file, save_file

from worker.model.config import CheckpointError
from worker.model.fp8_format import BlockFP8Format, dequantize_weight, quantize_weight
from worker.model.loader import load_model
from worker.model.quantize import dequantize_checkpoint, quantize_checkpoint

MAX_RELATIVE_ERROR = 1e-4
CPU = torch.device("cpu")
PUBLISHED_QUANTIZATION = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": [128, 128],
}
# hidden 144 and q rows 4 x 40 = 160: two 128-row blocks, partial ones, fused parts not block-aligned
SHAPES = {"tiny": {}, "multi-block": {"hidden_size": 144, "head_dim": 40, "v_head_dim": 24}}
PROMPT = list(range(3, 40))


def relative_error(ours, ref) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def converted(checkpoint_factory, tmp_path_factory):
    """shape -> (float source, FP8 copy, the FP8 copy dequantized to fp32)."""
    made = {}

    def make(shape: str):
        if shape not in made:
            src = checkpoint_factory(**SHAPES[shape])
            root = tmp_path_factory.mktemp(f"fp8-{shape}")
            quantize_checkpoint(src, root / "fp8")
            dequantize_checkpoint(root / "fp8", root / "deq", dtype=torch.float32)
            made[shape] = (src, root / "fp8", root / "deq")
        return made[shape]

    return make


def test_quantize_weight_hand_computed():
    """Block max 896 -> scale_inv 2 (896 / 448); 3.0 / 2 = 1.5 is an e4m3 value; a zero block gets 1."""
    fmt = BlockFP8Format(2, 2)
    weight = torch.tensor([[896.0, 3.0, 0.0], [-1.0, 0.5, 0.0]])
    quantized, scale_inv = quantize_weight(weight, fmt)
    assert quantized.dtype == torch.float8_e4m3fn
    assert scale_inv.tolist() == [[2.0, 1.0]]
    assert quantized.float().tolist() == [[448.0, 1.5, 0.0], [-0.5, 0.25, 0.0]]
    assert torch.equal(dequantize_weight(quantized, scale_inv, fmt, torch.float32), weight)


def test_quantization_error_is_within_e4m3_rounding():
    """|w - deq| <= scale * (|w / scale| * 2^-4 + 2^-10): 3 mantissa bits, subnormal step 2^-9."""
    fmt = BlockFP8Format(128, 128)
    weight = torch.randn(300, 200, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 200)
    quantized, scale_inv = quantize_weight(weight, fmt)
    assert tuple(scale_inv.shape) == (3, 2)
    back = dequantize_weight(quantized, scale_inv, fmt, torch.float32)
    scale = scale_inv.repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :200]
    bound = scale * ((weight / scale).abs() * 2**-4 + 2**-10)
    assert ((weight - back).abs() <= bound * 1.0001).all()


def test_quantized_checkpoint_is_the_published_format(converted):
    src, fp8, _ = converted("multi-block")
    config = json.loads((fp8 / "config.json").read_text())
    assert config["quantization_config"] == PUBLISHED_QUANTIZATION
    before, after = load_file(src / "model.safetensors"), load_file(fp8 / "model.safetensors")
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in before  # the hub's per-expert layout
    for name, tensor in before.items():
        scale = after.get(name + "_scale_inv")
        if name.endswith("_proj.weight"):
            out, inp = tensor.shape
            assert after[name].dtype == torch.float8_e4m3fn, name
            assert scale.dtype == torch.float32 and tuple(scale.shape) == (-(-out // 128), -(-inp // 128))
        else:  # norms, embeddings, lm_head, router gate and its bias, sinks: untouched
            assert scale is None and torch.equal(after[name], tensor), name


def test_loader_keeps_the_projections_in_fp8(converted):
    _, fp8, _ = converted("tiny")
    model = load_model(fp8, torch.float32, CPU)
    layer = model.layers[1]  # an SWA layer with a MoE MLP
    for linear in (layer.attn.qkv, layer.attn.o_proj, layer.mlp.gate_up, layer.mlp.down):
        assert linear.weight.dtype == torch.float8_e4m3fn and linear.scale_inv.dtype == torch.float32
    assert model.layers[0].mlp.gate_up.weight.dtype == torch.float8_e4m3fn  # the dense MLP
    for kept in (model.embed, model.lm_head, model.norm.weight, layer.mlp.router, layer.attn.sinks):
        assert kept.dtype == torch.float32


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fp8_logits_match_transformers_on_the_dequantized_weights(converted, shape):
    src, fp8, deq = converted(shape)
    with torch.no_grad():
        expected = load_reference(deq)(torch.tensor([PROMPT])).logits[0].float()
    got = prefill_logits(load_model(fp8, torch.float32, CPU), PROMPT)
    assert relative_error(got, expected) <= MAX_RELATIVE_ERROR
    # The comparison is sharp: the float source (before FP8 rounding) is measurably different.
    with torch.no_grad():
        unquantized = load_reference(src)(torch.tensor([PROMPT])).logits[0].float()
    assert relative_error(unquantized, expected) > 10 * MAX_RELATIVE_ERROR


def test_modules_to_not_convert_stay_in_the_model_dtype(checkpoint_factory, tmp_path):
    src = checkpoint_factory()
    quantize_checkpoint(src, tmp_path / "fp8", skip=("model.layers.2.self_attn",))
    config = json.loads((tmp_path / "fp8" / "config.json").read_text())
    assert config["quantization_config"]["modules_to_not_convert"] == ["model.layers.2.self_attn"]
    tensors = load_file(tmp_path / "fp8" / "model.safetensors")
    assert tensors["model.layers.2.self_attn.q_proj.weight"].dtype == torch.float32
    assert "model.layers.2.self_attn.q_proj.weight_scale_inv" not in tensors
    model = load_model(tmp_path / "fp8", torch.float32, CPU)
    assert model.layers[2].attn.qkv.weight.dtype == torch.float32
    assert model.layers[2].mlp.gate_up.weight.dtype == torch.float8_e4m3fn
    dequantize_checkpoint(tmp_path / "fp8", tmp_path / "deq", dtype=torch.float32)
    with torch.no_grad():
        expected = load_reference(tmp_path / "deq")(torch.tensor([PROMPT])).logits[0].float()
    assert relative_error(prefill_logits(model, PROMPT), expected) <= MAX_RELATIVE_ERROR


def test_a_fused_group_with_one_unscaled_part_is_held_in_the_model_dtype(converted, tmp_path):
    """k_proj stored in float beside FP8 q_proj / v_proj: qkv is dequantized at load, logits unchanged."""
    _, fp8, deq = converted("tiny")
    path = tmp_path / "mixed"
    path.mkdir()
    for f in fp8.iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    tensors = load_file(fp8 / "model.safetensors")
    name = "model.layers.1.self_attn.k_proj.weight"
    scale = tensors.pop(name + "_scale_inv")
    tensors[name] = dequantize_weight(tensors[name], scale, BlockFP8Format(128, 128), torch.float32)
    save_file(tensors, path / "model.safetensors")
    model = load_model(path, torch.float32, CPU)
    assert model.layers[1].attn.qkv.weight.dtype == torch.float32
    assert model.layers[2].attn.qkv.weight.dtype == torch.float8_e4m3fn
    with torch.no_grad():
        expected = load_reference(deq)(torch.tensor([PROMPT])).logits[0].float()
    assert relative_error(prefill_logits(model, PROMPT), expected) <= MAX_RELATIVE_ERROR


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fmt": "e5m2"}, "fmt 'e5m2' is not supported"),
        ({"weight_block_size": [64, 64]}, r"weight_block_size \[64, 64\] is not supported"),
        ({"weight_block_size": None}, r"weight_block_size \[\] is not supported.*per-tensor"),
        ({"quant_method": "gptq"}, "quant_method 'gptq' is not supported"),
        ({"activation_scheme": "static"}, "activation_scheme 'static' is not supported"),
    ],
)
def test_unsupported_quantization_is_refused_by_name(converted, tmp_path, change, message):
    _, fp8, _ = converted("tiny")
    path = tmp_path / "bad"
    path.mkdir()
    config = json.loads((fp8 / "config.json").read_text())
    config["quantization_config"] |= change
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").symlink_to(fp8 / "model.safetensors")
    with pytest.raises(CheckpointError, match=message):
        load_model(path, torch.float32, CPU)


def _edited(fp8, tmp_path, edit, config_edit=None):
    path = tmp_path / "edited"
    path.mkdir()
    config = json.loads((fp8 / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config_edit(config) if config_edit else config))
    tensors = load_file(fp8 / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors")
    return path


def test_fp8_weight_without_its_scale_is_refused(converted, tmp_path):
    _, fp8, _ = converted("tiny")
    path = _edited(fp8, tmp_path, lambda t: t.pop("model.layers.0.mlp.down_proj.weight_scale_inv"))
    with pytest.raises(CheckpointError, match=r"mlp\.down_proj\.weight is float8 without .*weight_scale_inv"):
        load_model(path, torch.float32, CPU)


def test_misshaped_scale_names_both_shapes(converted, tmp_path):
    _, fp8, _ = converted("tiny")
    name = "model.layers.0.self_attn.o_proj.weight_scale_inv"
    path = _edited(fp8, tmp_path, lambda t: t.__setitem__(name, torch.ones(2, 1)))
    with pytest.raises(
        CheckpointError, match=r"o_proj\.weight_scale_inv has shape \(2, 1\), expected \(1, 1\)"
    ):
        load_model(path, torch.float32, CPU)


def test_scales_without_a_quantization_config_are_refused(converted, tmp_path):
    _, fp8, _ = converted("tiny")
    path = _edited(
        fp8, tmp_path, lambda t: None, lambda c: {k: v for k, v in c.items() if k != "quantization_config"}
    )
    with pytest.raises(CheckpointError, match="block scale but config.json has no quantization_config"):
        load_model(path, torch.float32, CPU)


def test_quantizing_twice_is_refused(converted, tmp_path):
    _, fp8, _ = converted("tiny")
    with pytest.raises(CheckpointError, match="already quantized"):
        quantize_checkpoint(fp8, tmp_path / "again")


def test_engine_serves_the_fp8_checkpoint_like_its_dequantized_copy(converted):
    """Through LLM: chunked prefill (5-token steps), paged decode and prefix caching on FP8 weights."""
    from worker.engine import LLM, SamplingParams

    _, fp8, deq = converted("tiny")
    prompts = [{"prompt_token_ids": PROMPT}, {"prompt_token_ids": PROMPT[:20] + [5, 6, 7]}]
    params = SamplingParams(temperature=0, max_tokens=12)
    outputs = []
    for path in (fp8, deq):
        llm = LLM(
            path, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01,
            max_num_batched_tokens=5, enable_prefix_caching=True,
        )  # fmt: skip
        outputs.append([o.outputs[0].token_ids for o in llm.generate(prompts, params)])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fp8_paged_prefill_and_decode_logits_match_transformers(converted, shape):
    """Through the engine's runner: 5-token prefill chunks over paged KV, then every decode step."""
    from test_logits_parity import engine_logits

    from worker.engine import LLM

    _, fp8, deq = converted(shape)
    llm = LLM(fp8, device="cpu", dtype="float32", block_size=4, kv_cache_gb=0.01)
    continuation = list(range(50, 62))
    with torch.no_grad():
        expected = load_reference(deq)(torch.tensor([PROMPT + continuation])).logits[0].float()
    got = engine_logits(llm, PROMPT, continuation, chunk=5)
    for row in range(len(PROMPT) + len(continuation)):
        assert relative_error(got[row], expected[row]) <= MAX_RELATIVE_ERROR, f"position {row}"

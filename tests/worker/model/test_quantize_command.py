"""``hybatch quantize`` / ``hybatch dequantize``: a checkpoint there and back, and clear refusals."""

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hybatch.cli import app
from worker.model.fp8_format import BlockFP8Format, dequantize_weight


def test_quantize_then_dequantize(tiny_checkpoint, tmp_path):
    runner = CliRunner()
    fp8, back = tmp_path / "fp8", tmp_path / "back"
    result = runner.invoke(app, ["quantize", str(tiny_checkpoint), str(fp8), "--skip", "model.layers.0.mlp"])
    assert result.exit_code == 0, result.output
    # q, k, v, o of 4 layers (16) + gate, up, down of 4 experts in layers 1-3 (36); layer 0 MLP skipped
    assert "52 tensors quantized, 23 copied" in result.output
    assert json.loads((fp8 / "config.json").read_text())["quantization_config"]["modules_to_not_convert"] == [
        "model.layers.0.mlp"
    ]
    result = runner.invoke(app, ["dequantize", str(fp8), str(back), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "52 tensors dequantized to float32, 23 copied" in result.output
    quantized, restored = load_file(fp8 / "model.safetensors"), load_file(back / "model.safetensors")
    name = "model.layers.2.mlp.experts.1.up_proj.weight"
    expected = dequantize_weight(
        quantized[name], quantized[name + "_scale_inv"], BlockFP8Format(128, 128), torch.float32
    )
    assert torch.equal(restored[name], expected)
    assert "quantization_config" not in json.loads((back / "config.json").read_text())


def test_refusals_are_one_line_errors(tiny_checkpoint, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["dequantize", str(tiny_checkpoint), str(tmp_path / "x")])
    assert result.exit_code == 1 and "is not quantized" in result.output
    result = runner.invoke(app, ["quantize", str(tiny_checkpoint), str(tiny_checkpoint)])
    assert result.exit_code == 1 and "exists and is not empty" in result.output

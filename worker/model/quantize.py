"""Convert checkpoint directories between a float dtype and the block-FP8 format (``fp8_format``).

``quantize_checkpoint`` writes what MiMo-V2-Flash publishes: every attention and MLP projection
(dense, expert and MTP) as float8_e4m3fn + ``weight_scale_inv``, everything else (embeddings,
lm_head, norms, the router gate, sinks, biases) unchanged; ``dequantize_checkpoint`` is the reverse.
Both stream one shard at a time, so memory stays at a shard's size, and copy the other files
(tokenizer, generation config) as they are. Used by ``hybatch quantize`` / ``hybatch dequantize``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from worker.model.config import CheckpointError, ModelConfig
from worker.model.fp8_format import (
    FP8_DTYPE,
    SCALE_SUFFIX,
    BlockFP8Format,
    dequantize_weight,
    quantize_weight,
)

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# The projections the published FP8 checkpoints quantize: q/k/v/o, and gate/up/down of dense and
# expert MLPs, in decoder and MTP layers alike.
PROJECTION = re.compile(r"\.(self_attn\.[qkvo]_proj|mlp\.(experts\.\d+\.)?(gate|up|down)_proj)\.weight$")


@dataclass(frozen=True)
class ConversionReport:
    num_converted: int  # tensors quantized (or dequantized)
    num_copied: int  # tensors written unchanged
    bytes_before: int
    bytes_after: int


def _shards(src: Path) -> list[str]:
    if (src / INDEX).is_file():
        return sorted(set(json.loads((src / INDEX).read_text())["weight_map"].values()))
    if (src / SINGLE).is_file():
        return [SINGLE]
    raise CheckpointError(f"{src}: neither {SINGLE} nor {INDEX}")


def _weight_map(src: Path) -> dict[str, str]:
    """Tensor name -> shard file name."""
    if (src / INDEX).is_file():
        return json.loads((src / INDEX).read_text())["weight_map"]
    with safe_open(src / SINGLE, "pt") as f:
        return dict.fromkeys(f.keys(), SINGLE)  # noqa: SIM118


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _convert(src: Path, dst: Path, convert_shard, config_update) -> ConversionReport:
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst} exists and is not empty")
    dst.mkdir(parents=True, exist_ok=True)
    weight_map, converted, copied, before, after = {}, 0, 0, 0, 0
    for shard in _shards(src):
        with safe_open(src / shard, "pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        out, n, kept = convert_shard(tensors)
        converted, copied = converted + n, copied + kept
        before, after = before + _nbytes(tensors), after + _nbytes(out)
        save_file(out, dst / shard, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(out, shard)
    if (src / INDEX).is_file():
        index = {"metadata": {"total_size": after}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    config = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(config_update(config), indent=2) + "\n")
    for path in src.iterdir():
        if path.is_file() and path.name not in {INDEX, "config.json"} and path.suffix != ".safetensors":
            shutil.copy2(path, dst / path.name)
    return ConversionReport(converted, copied, before, after)


def quantize_checkpoint(
    src: str | Path, dst: str | Path, *, fmt: BlockFP8Format | None = None, skip: tuple[str, ...] = ()
) -> ConversionReport:
    """Writes ``src`` (a float checkpoint) to the new directory ``dst`` in block FP8.

    ``skip``: module-name substrings left unquantized, recorded as ``modules_to_not_convert``.
    """
    src, dst = Path(src), Path(dst)
    if ModelConfig.from_dir(src).quantization is not None:
        raise CheckpointError(f"{src} is already quantized (config.json has a quantization_config)")
    fmt = BlockFP8Format(128, 128, tuple(skip)) if fmt is None else fmt

    def convert_shard(tensors):
        out, n = {}, 0
        for name, tensor in tensors.items():
            module = name.removesuffix(".weight")
            if PROJECTION.search(name) and tensor.dim() == 2 and not fmt.leaves_unconverted(module):
                out[name], out[name + SCALE_SUFFIX] = quantize_weight(tensor, fmt)
                n += 1
            else:
                out[name] = tensor
        return out, n, len(tensors) - n

    return _convert(src, dst, convert_shard, lambda config: config | {"quantization_config": fmt.to_config()})


def dequantize_checkpoint(src: str | Path, dst: str | Path, *, dtype: torch.dtype) -> ConversionReport:
    """Writes the block-FP8 checkpoint ``src`` to the new directory ``dst`` with every weight in ``dtype``."""
    src, dst = Path(src), Path(dst)
    fmt = ModelConfig.from_dir(src).quantization
    if fmt is None:
        raise CheckpointError(f"{src} is not quantized (config.json has no quantization_config)")
    dtype_name = str(dtype).removeprefix("torch.")
    weight_map = _weight_map(src)

    def scale_of(name: str, tensors) -> torch.Tensor | None:
        # A published index may put a weight and its scale in different shards.
        scale_name = name + SCALE_SUFFIX
        if scale_name in tensors or scale_name not in weight_map:
            return tensors.get(scale_name)
        with safe_open(src / weight_map[scale_name], "pt") as f:
            return f.get_tensor(scale_name)

    def convert_shard(tensors):
        out, n = {}, 0
        for name, tensor in tensors.items():
            if name.endswith(SCALE_SUFFIX):
                continue
            scale = scale_of(name, tensors)
            if scale is not None:
                out[name] = dequantize_weight(tensor, scale, fmt, dtype)
                n += 1
            elif tensor.dtype == FP8_DTYPE:
                raise CheckpointError(f"tensor {name} is float8 without {name}{SCALE_SUFFIX}")
            else:
                out[name] = tensor
        return out, n, len(out) - n

    def update(config):
        return {k: v for k, v in config.items() if k != "quantization_config"} | {"torch_dtype": dtype_name}

    return _convert(src, dst, convert_shard, update)

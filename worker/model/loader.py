"""Load a Hugging Face MiMo-V2 checkpoint directory into ``MiMoV2Model``.

Accepts ``model.safetensors`` or shards listed in ``model.safetensors.index.json``; experts may be stored
per expert (``mlp.experts.{e}.gate_proj.weight``, the hub layout) or stacked (``mlp.experts.gate_up_proj``).
MTP weights (``model.mtp.*``) are ignored, as transformers ignores them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from worker.model.config import CheckpointError, ModelConfig
from worker.model.mimo import MiMoV2Model

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise CheckpointError(f"dtype {name} is not supported (use float32, bfloat16 or float16)")
    if name not in DTYPES:
        raise CheckpointError(f"unknown dtype {name!r} (use one of: float32, bfloat16, float16)")
    return DTYPES[name]


class _TensorSource:
    """Name → tensor over one or many safetensors files."""

    def __init__(self, checkpoint_dir: Path):
        index = checkpoint_dir / "model.safetensors.index.json"
        single = checkpoint_dir / "model.safetensors"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: checkpoint_dir / shard for name, shard in weight_map.items()}
        elif single.is_file():
            with safe_open(single, "pt") as f:
                self.files = {name: single for name in f.keys()}  # noqa: SIM118
        else:
            raise CheckpointError(
                f"{checkpoint_dir}: neither model.safetensors nor model.safetensors.index.json"
            )
        missing_shards = sorted({str(p.name) for p in self.files.values() if not p.is_file()})
        if missing_shards:
            raise CheckpointError(f"{checkpoint_dir}: missing shard files {missing_shards}")
        self._handles: dict[Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = safe_open(path, "pt")
        return self._handles[path].get_tensor(name)

    def names(self) -> set[str]:
        return set(self.files)


def _assign(target: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    if tuple(tensor.shape) != tuple(target.shape):
        raise CheckpointError(
            f"tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)} from config.json"
        )
    if not (tensor.dtype.is_floating_point):
        raise CheckpointError(
            f"tensor {name} has dtype {tensor.dtype}; only floating-point weights are supported"
        )
    target.copy_(tensor.to(device=target.device, dtype=target.dtype))


class _Reader:
    def __init__(self, source: _TensorSource):
        self.source = source
        self.used: set[str] = set()

    def take(self, name: str) -> torch.Tensor:
        if name not in self.source:
            raise CheckpointError(f"checkpoint is missing tensor {name}")
        self.used.add(name)
        return self.source.get(name)

    def take_first(self, *names: str) -> torch.Tensor:
        for name in names:
            if name in self.source:
                return self.take(name)
        raise CheckpointError(f"checkpoint is missing tensor {names[0]}")


def load_model(checkpoint_dir: str | Path, dtype: torch.dtype, device: torch.device) -> MiMoV2Model:
    """Builds the model for ``config.json`` and fills it from the checkpoint's safetensors."""
    checkpoint_dir = Path(checkpoint_dir)
    config = ModelConfig.from_dir(checkpoint_dir)
    model = MiMoV2Model(config, dtype, device)
    reader = _Reader(_TensorSource(checkpoint_dir))
    with torch.no_grad():
        _assign(model.embed, reader.take("model.embed_tokens.weight"), "model.embed_tokens.weight")
        _assign(model.norm.weight, reader.take("model.norm.weight"), "model.norm.weight")
        if not config.tie_word_embeddings:
            _assign(model.lm_head, reader.take("lm_head.weight"), "lm_head.weight")
        for i, layer in enumerate(model.layers):
            _load_layer(reader, f"model.layers.{i}.", layer, config)
    ignored = sorted(n for n in reader.source.names() - reader.used if not n.startswith("model.mtp."))
    if ignored and not (config.tie_word_embeddings and ignored == ["lm_head.weight"]):
        log.warning(
            "ignoring %d unexpected tensors in %s, e.g. %s", len(ignored), checkpoint_dir, ignored[:3]
        )
    return model.eval()


def _load_layer(reader: _Reader, prefix: str, layer, config: ModelConfig) -> None:
    _assign(
        layer.input_norm.weight,
        reader.take(prefix + "input_layernorm.weight"),
        prefix + "input_layernorm.weight",
    )
    _assign(
        layer.post_attn_norm.weight,
        reader.take(prefix + "post_attention_layernorm.weight"),
        prefix + "post_attention_layernorm.weight",
    )
    attn, a = layer.attn, prefix + "self_attn."
    q_rows, k_rows, _ = attn.qkv_sizes
    parts = [
        (0, q_rows, "q_proj"),
        (q_rows, q_rows + k_rows, "k_proj"),
        (q_rows + k_rows, attn.qkv.shape[0], "v_proj"),
    ]
    for lo, hi, proj in parts:
        _assign(attn.qkv[lo:hi], reader.take(f"{a}{proj}.weight"), f"{a}{proj}.weight")
        if attn.qkv_bias is not None:
            _assign(attn.qkv_bias[lo:hi], reader.take(f"{a}{proj}.bias"), f"{a}{proj}.bias")
    _assign(attn.o_proj, reader.take(a + "o_proj.weight"), a + "o_proj.weight")
    if attn.sinks is not None:
        _assign(
            attn.sinks, reader.take_first(a + "attention_sink_bias", a + "sinks"), a + "attention_sink_bias"
        )

    mlp, m = layer.mlp, prefix + "mlp."
    if hasattr(mlp, "router"):
        _assign(mlp.router, reader.take(m + "gate.weight"), m + "gate.weight")
        _assign(
            mlp.correction_bias,
            reader.take(m + "gate.e_score_correction_bias"),
            m + "gate.e_score_correction_bias",
        )
        if m + "experts.gate_up_proj" in reader.source:
            _assign(mlp.gate_up, reader.take(m + "experts.gate_up_proj"), m + "experts.gate_up_proj")
            _assign(mlp.down, reader.take(m + "experts.down_proj"), m + "experts.down_proj")
            return
        inter = config.moe_intermediate_size
        for e in range(config.num_experts):
            x = f"{m}experts.{e}."
            _assign(mlp.gate_up[e, :inter], reader.take(x + "gate_proj.weight"), x + "gate_proj.weight")
            _assign(mlp.gate_up[e, inter:], reader.take(x + "up_proj.weight"), x + "up_proj.weight")
            _assign(mlp.down[e], reader.take(x + "down_proj.weight"), x + "down_proj.weight")
    else:
        inter = config.intermediate_size
        _assign(mlp.gate_up[:inter], reader.take(m + "gate_proj.weight"), m + "gate_proj.weight")
        _assign(mlp.gate_up[inter:], reader.take(m + "up_proj.weight"), m + "up_proj.weight")
        _assign(mlp.down, reader.take(m + "down_proj.weight"), m + "down_proj.weight")

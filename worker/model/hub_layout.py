"""The tensor names and shapes of a published MiMo-V2 checkpoint, and random checkpoints in that layout.

The layout is the hub's: per-expert MLP tensors (``mlp.experts.{e}.gate_proj.weight``), SWA sinks as
``self_attn.attention_sink_bias``, the router as ``mlp.gate.weight`` + ``mlp.gate.e_score_correction_bias``,
and ``num_nextn_predict_layers`` MTP layers under ``model.mtp.layers.{j}.`` (DeepSeek-V3 style, as we
know them: ``enorm`` / ``hnorm`` / ``eh_proj`` / ``final_layernorm`` around one SWA decoder layer with
a dense MLP). In an FP8 checkpoint every projection carries ``weight_scale_inv``.

``write_random_checkpoint`` builds a checkpoint of any such config without transformers (benchmarks
at reduced width, the published-layout tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from worker.model.config import SLIDING, ModelConfig
from worker.model.fp8_format import SCALE_SUFFIX, quantize_weight


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    is_projection: bool  # quantized in an FP8 checkpoint
    is_norm: bool = False  # initialised to ones in random checkpoints


def _attention(c: ModelConfig, prefix: str, sliding: bool) -> dict[str, TensorSpec]:
    kv_heads = c.num_kv_heads_swa if sliding else c.num_kv_heads_full
    rows = {
        "q_proj": c.num_attention_heads * c.head_dim,
        "k_proj": kv_heads * c.head_dim,
        "v_proj": kv_heads * c.v_head_dim,
    }
    specs = {f"{prefix}self_attn.{p}.weight": TensorSpec((n, c.hidden_size), True) for p, n in rows.items()}
    if c.attention_bias:
        specs |= {f"{prefix}self_attn.{p}.bias": TensorSpec((n,), False) for p, n in rows.items()}
    specs[f"{prefix}self_attn.o_proj.weight"] = TensorSpec(
        (c.hidden_size, c.num_attention_heads * c.v_head_dim), True
    )
    if sliding:
        specs[f"{prefix}self_attn.attention_sink_bias"] = TensorSpec((c.num_attention_heads,), False)
    return specs


def _mlp(prefix: str, hidden: int, inter: int) -> dict[str, TensorSpec]:
    return {
        f"{prefix}gate_proj.weight": TensorSpec((inter, hidden), True),
        f"{prefix}up_proj.weight": TensorSpec((inter, hidden), True),
        f"{prefix}down_proj.weight": TensorSpec((hidden, inter), True),
    }


def _norms(prefix: str, hidden: int, *names: str) -> dict[str, TensorSpec]:
    return {f"{prefix}{n}.weight": TensorSpec((hidden,), False, is_norm=True) for n in names}


def checkpoint_layout(config: ModelConfig) -> dict[str, TensorSpec]:
    """Every weight tensor of the published checkpoint (without scales), in file order."""
    h = config.hidden_size
    specs = {"model.embed_tokens.weight": TensorSpec((config.vocab_size, h), False)}
    for i, layer_type in enumerate(config.layer_types):
        prefix = f"model.layers.{i}."
        specs |= _norms(prefix, h, "input_layernorm", "post_attention_layernorm")
        specs |= _attention(config, prefix, layer_type == SLIDING)
        if config.mlp_layer_types[i] == "dense":
            specs |= _mlp(prefix + "mlp.", h, config.intermediate_size)
            continue
        specs[prefix + "mlp.gate.weight"] = TensorSpec((config.num_experts, h), False)
        specs[prefix + "mlp.gate.e_score_correction_bias"] = TensorSpec((config.num_experts,), False)
        for e in range(config.num_experts):
            specs |= _mlp(f"{prefix}mlp.experts.{e}.", h, config.moe_intermediate_size)
    for j in range(config.num_mtp_layers):
        prefix = f"model.mtp.layers.{j}."
        specs |= _norms(prefix, h, "enorm", "hnorm", "input_layernorm", "post_attention_layernorm")
        specs[prefix + "eh_proj.weight"] = TensorSpec((h, 2 * h), False)
        specs |= _attention(config, prefix, sliding=True)
        specs |= _mlp(prefix + "mlp.", h, config.intermediate_size)
        specs |= _norms(prefix, h, "final_layernorm")
    specs |= _norms("model.", h, "norm")
    if not config.tie_word_embeddings:
        specs["lm_head.weight"] = TensorSpec((config.vocab_size, h), False)
    return specs


def write_random_checkpoint(
    raw_config: dict,
    path: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.bfloat16,
    std: float = 0.08,
    max_shard_bytes: int = 2**30,
) -> Path:
    """Writes ``config.json`` and random weights of that config to ``path`` in the hub layout.

    Projections are quantized to block FP8 when ``raw_config`` has a ``quantization_config``; shards
    of about ``max_shard_bytes`` are listed in ``model.safetensors.index.json`` when there is more
    than one. Norms are ones; everything else ``N(0, std)``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.from_dict(raw_config)
    generator = torch.Generator().manual_seed(seed)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, spec in checkpoint_layout(config).items():
        if spec.is_norm:
            tensors = {name: torch.ones(spec.shape, dtype=dtype)}
        else:
            value = torch.randn(spec.shape, generator=generator) * std
            if spec.is_projection and config.quantization is not None:
                weight, scale_inv = quantize_weight(value, config.quantization)
                tensors = {name: weight, name + SCALE_SUFFIX: scale_inv}
            else:
                tensors = {name: value.to(torch.float32 if name.endswith("correction_bias") else dtype)}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if shard_bytes and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1] |= tensors
        shard_bytes += size
    (path / "config.json").write_text(json.dumps(raw_config, indent=2) + "\n")
    if len(shards) == 1:
        save_file(shards[0], path / "model.safetensors", metadata={"format": "pt"})
        return path
    weight_map = {}
    for k, tensors in enumerate(shards, start=1):
        shard = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, path / shard, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, shard)
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path

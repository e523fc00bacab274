"""The model's shape, read once from a checkpoint's ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from worker.model.fp8_format import BlockFP8Format, QuantizationConfigError, parse_quantization_config

SUPPORTED_MODEL_TYPES = ("mimo_v2_flash",)
FULL = "full_attention"
SLIDING = "sliding_attention"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be served, with the reason."""


@dataclass(frozen=True)
class RopeConfig:
    theta: float
    partial_rotary_factor: float

    def rotary_dim(self, head_dim: int) -> int:
        # Same truncation as the reference: int(head_dim * factor), then pairs.
        return int(head_dim * self.partial_rotary_factor)


@dataclass(frozen=True)
class ModelConfig:
    """Frozen view of a MiMo-V2 ``config.json``; semantics follow transformers' MiMoV2FlashConfig."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads_full: int
    num_kv_heads_swa: int
    head_dim: int
    v_head_dim: int
    sliding_window: int
    layer_types: tuple[str, ...]
    mlp_layer_types: tuple[str, ...]
    rope: dict[str, RopeConfig]
    attention_value_scale: float
    rms_norm_eps: float
    attention_bias: bool
    moe_intermediate_size: int
    num_experts: int
    num_experts_per_tok: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    routed_scaling_factor: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    hidden_act: str
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    quantization: BlockFP8Format | None = None  # None: weights in the checkpoint's float dtype
    num_mtp_layers: int = 0  # multi-token-prediction layers in the checkpoint (skipped when loading)

    @property
    def full_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == FULL)

    @property
    def swa_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == SLIDING)

    def is_sliding(self, layer_idx: int) -> bool:
        return self.layer_types[layer_idx] == SLIDING

    def num_kv_heads(self, layer_idx: int) -> int:
        return self.num_kv_heads_swa if self.is_sliding(layer_idx) else self.num_kv_heads_full

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise CheckpointError(
                f"unsupported model_type {model_type!r}; hybatch serves {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        num_layers = int(raw.get("num_hidden_layers", 48))
        layer_types = (
            raw.get("layer_types")
            or _from_hybrid_pattern(raw)
            or [FULL if (i == 0 or not ((i + 1) % 6)) else SLIDING for i in range(num_layers)]
        )
        mlp_layer_types = (
            raw.get("mlp_layer_types")
            or _from_moe_layer_freq(raw, num_layers)
            or ["dense"] + ["sparse"] * (num_layers - 1)
        )
        problems = _shape_problems(num_layers, layer_types, mlp_layer_types) + _hub_field_problems(
            raw, layer_types, mlp_layer_types
        )
        if problems:
            raise CheckpointError("; ".join(problems))
        try:
            quantization = parse_quantization_config(raw.get("quantization_config"))
        except QuantizationConfigError as error:
            raise CheckpointError(str(error)) from error
        sliding_window = raw.get("sliding_window", 129)
        if raw.get("sliding_window_size") is not None:
            # Checkpoints exported from SGLang count the window without the query itself.
            sliding_window = int(raw["sliding_window_size"]) + 1
        kv_heads = int(raw.get("num_key_value_heads", 4))
        routed_scaling = raw.get("routed_scaling_factor")
        return cls(
            vocab_size=int(raw.get("vocab_size", 152576)),
            hidden_size=int(raw.get("hidden_size", 4096)),
            intermediate_size=int(raw.get("intermediate_size", 16384)),
            num_layers=num_layers,
            num_attention_heads=int(raw.get("num_attention_heads", 64)),
            num_kv_heads_full=kv_heads,
            num_kv_heads_swa=2 * kv_heads,
            head_dim=int(raw.get("head_dim", 192)),
            v_head_dim=int(raw.get("v_head_dim", 128)),
            sliding_window=int(sliding_window),
            layer_types=tuple(layer_types),
            mlp_layer_types=tuple(mlp_layer_types),
            rope=_rope_from(raw),
            attention_value_scale=float(
                1.0
                if raw.get("attention_value_scale", 0.707) is None
                else raw.get("attention_value_scale", 0.707)
            ),
            rms_norm_eps=float(raw.get("rms_norm_eps", raw.get("layernorm_epsilon", 1e-5))),
            attention_bias=bool(raw.get("attention_bias", False)),
            moe_intermediate_size=int(raw.get("moe_intermediate_size", 2048)),
            num_experts=int(raw.get("n_routed_experts", 256)),
            num_experts_per_tok=int(raw.get("num_experts_per_tok", 8)),
            n_group=int(raw.get("n_group", 1)),
            topk_group=int(raw.get("topk_group", 1)),
            norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
            routed_scaling_factor=float(1.0 if routed_scaling is None else routed_scaling),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 131072)),
            hidden_act=str(raw.get("hidden_act", "silu")),
            eos_token_ids=_as_ids(raw.get("eos_token_id")),
            bos_token_id=raw.get("bos_token_id"),
            quantization=quantization,
            num_mtp_layers=int(raw.get("num_nextn_predict_layers") or 0),
        )

    @classmethod
    def from_dir(cls, checkpoint_dir: str | Path) -> ModelConfig:
        path = Path(checkpoint_dir) / "config.json"
        if not path.is_file():
            raise CheckpointError(
                f"{checkpoint_dir}: no config.json (expected a Hugging Face checkpoint directory)"
            )
        return cls.from_dict(json.loads(path.read_text()))


def _as_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _shape_problems(num_layers: int, layer_types: list, mlp_layer_types: list) -> list[str]:
    problems = []
    if len(layer_types) != num_layers:
        problems.append(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
    if len(mlp_layer_types) != num_layers:
        problems.append(f"mlp_layer_types has {len(mlp_layer_types)} entries for {num_layers} layers")
    unknown = sorted({t for t in layer_types if t not in (FULL, SLIDING)})
    if unknown:
        problems.append(f"unknown layer_types {unknown}")
    unknown_mlp = sorted({t for t in mlp_layer_types if t not in ("dense", "sparse")})
    if unknown_mlp:
        problems.append(f"unknown mlp_layer_types {unknown_mlp}")
    return problems


def _from_hybrid_pattern(raw: dict) -> list[str] | None:
    """The hub config's ``hybrid_layer_pattern``: one int per layer, 1 = sliding window, 0 = full."""
    pattern = raw.get("hybrid_layer_pattern")
    if pattern is None:
        return None
    return [SLIDING if int(p) == 1 else FULL for p in pattern]


def _from_moe_layer_freq(raw: dict, num_layers: int) -> list[str] | None:
    """The hub config's ``moe_layer_freq``: one int per layer, 1 = MoE (sparse), 0 = dense."""
    freq = raw.get("moe_layer_freq")
    if not isinstance(freq, list):
        return None
    return ["sparse" if int(f) else "dense" for f in freq]


def _hub_field_problems(raw: dict, layer_types: list, mlp_layer_types: list) -> list[str]:
    """Fields of the published config.json that transformers ignores: refuse values we would misread."""
    problems = []
    pattern, mlp = _from_hybrid_pattern(raw), _from_moe_layer_freq(raw, len(layer_types))
    if pattern is not None and pattern != list(layer_types):
        problems.append("hybrid_layer_pattern and layer_types disagree")
    if mlp is not None and mlp != list(mlp_layer_types):
        problems.append("moe_layer_freq and mlp_layer_types disagree")
    kv_heads = int(raw.get("num_key_value_heads", 4))
    same_as = {
        "swa_head_dim": raw.get("head_dim", 192),
        "swa_v_head_dim": raw.get("v_head_dim", 128),
        "swa_num_attention_heads": raw.get("num_attention_heads", 64),
        "swa_num_key_value_heads": 2 * kv_heads,  # SWA layers have twice the KV heads
    }
    for field, expected in same_as.items():
        if raw.get(field) is not None and int(raw[field]) != int(expected):
            problems.append(f"{field} {raw[field]} is not supported (the model needs {expected})")
    if raw.get("add_full_attention_sink_bias"):
        problems.append("add_full_attention_sink_bias true is not supported (sinks only on SWA layers)")
    if raw.get("add_swa_attention_sink_bias") is False:
        problems.append("add_swa_attention_sink_bias false is not supported (SWA layers have sinks)")
    if raw.get("n_shared_experts"):
        problems.append(f"n_shared_experts {raw['n_shared_experts']} is not supported (MiMo-V2 has none)")
    if raw.get("scoring_func", "sigmoid") != "sigmoid":
        problems.append(f"scoring_func {raw['scoring_func']!r} is not supported (the router is sigmoid)")
    return problems


def _rope_from(raw: dict) -> dict[str, RopeConfig]:
    # The hub config.json spells rope as rope_theta / swa_rope_theta / partial_rotary_factor.
    factor = float(raw.get("partial_rotary_factor", 0.334))
    params = raw.get("rope_parameters") or {
        FULL: {
            "rope_type": "default",
            "rope_theta": float(raw.get("rope_theta", 5_000_000.0)),
            "partial_rotary_factor": factor,
        },
        SLIDING: {
            "rope_type": "default",
            "rope_theta": float(raw.get("swa_rope_theta", 10_000.0)),
            "partial_rotary_factor": factor,
        },
    }
    rope = {}
    for layer_type in (FULL, SLIDING):
        entry = params.get(layer_type)
        if entry is None:
            continue
        if entry.get("rope_type", "default") != "default":
            raise CheckpointError(f"rope_type {entry['rope_type']!r} for {layer_type} is not supported")
        rope[layer_type] = RopeConfig(
            theta=float(entry["rope_theta"]),
            partial_rotary_factor=float(entry.get("partial_rotary_factor", 0.334)),
        )
    return rope

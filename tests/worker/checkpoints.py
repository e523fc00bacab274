"""Tiny random MiMo-V2 checkpoints built with transformers, the reference implementation."""

from __future__ import annotations

from pathlib import Path

import torch


def build_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    vocab_size: int = 97,
    hidden_size: int = 48,
    num_layers: int = 4,
    layer_types: list[str] | None = None,
    mlp_layer_types: list[str] | None = None,
    num_heads: int = 4,
    num_kv_heads: int = 1,
    head_dim: int = 12,
    v_head_dim: int = 10,
    sliding_window: int = 8,
    num_experts: int = 4,
    experts_per_tok: int = 2,
    n_group: int = 2,
    topk_group: int = 1,
    tie_word_embeddings: bool = False,
    attention_value_scale: float = 0.707,
    max_position_embeddings: int = 512,
    eos_token_id: int | None = None,
    sink_scale: float = 1.0,
) -> Path:
    from transformers import MiMoV2FlashConfig, MiMoV2FlashForCausalLM

    if layer_types is None:
        layer_types = ["full_attention"] + ["sliding_attention"] * (num_layers - 1)
    if mlp_layer_types is None:
        mlp_layer_types = ["dense"] + ["sparse"] * (num_layers - 1)
    config = MiMoV2FlashConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim,
        v_head_dim=v_head_dim,
        sliding_window=sliding_window,
        layer_types=layer_types,
        mlp_layer_types=mlp_layer_types,
        moe_intermediate_size=hidden_size,
        n_routed_experts=num_experts,
        num_experts_per_tok=experts_per_tok,
        n_group=n_group,
        topk_group=topk_group,
        tie_word_embeddings=tie_word_embeddings,
        attention_value_scale=attention_value_scale,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        pad_token_id=None,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 50000.0, "partial_rotary_factor": 0.5},
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": 1000.0,
                "partial_rotary_factor": 0.34,
            },
        },
    )
    torch.manual_seed(seed)
    model = MiMoV2FlashForCausalLM(config)
    with torch.no_grad():
        # Larger-than-default weights so attention is sharp and routing is decisive: differences show.
        for name, param in model.named_parameters():
            if name.endswith("sinks"):
                param.normal_(0.0, sink_scale)
            elif param.dim() >= 2:
                param.normal_(0.0, 0.08)
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.e_score_correction_bias.normal_(0.0, 0.05)
    model.save_pretrained(path)
    return path


def load_reference(path: Path):
    from transformers import MiMoV2FlashForCausalLM

    model = MiMoV2FlashForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()

"""The shape of the shipped default model, `hybatch-tiny`.

A scaled-down MiMo-V2 hybrid: 8 layers in the "1:7" pattern of MiMo-V2.5-Pro (layer 0 full attention,
layers 1-7 sliding-window attention with window 128), q/k head dim 48 != v head dim 32, attention sinks
and doubled KV heads on the SWA layers (transformers adds both from `layer_types`), and a sigmoid
top-k routed MoE MLP in every layer but the first.
"""

from transformers import MiMoV2FlashConfig

NUM_LAYERS = 8
FULL_ATTENTION_EVERY = 8  # one full-attention layer, then 7 SWA layers
SLIDING_WINDOW_TOKENS = 128  # counts the query itself
MAX_POSITION_TOKENS = 4096


def hybrid_layer_types(num_layers: int, full_every: int) -> list[str]:
    """Return `layer_types`: full attention at layers 0, full_every, 2*full_every, ...; SWA elsewhere."""
    return ["full_attention" if i % full_every == 0 else "sliding_attention" for i in range(num_layers)]


def default_model_config(
    vocab_size: int, eos_token_id: int, bos_token_id: int, pad_token_id: int
) -> MiMoV2FlashConfig:
    """Build the `MiMoV2FlashConfig` of the default model for a tokenizer with `vocab_size` tokens."""
    return MiMoV2FlashConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=8,
        num_key_value_heads=1,  # full layers; SWA layers get 2
        head_dim=48,  # q/k
        v_head_dim=32,
        # sqrt(hidden / (heads * v_head_dim)) would be 1.0 here; keep the real model's value so a
        # consumer that forgets the value scale is caught by a perplexity comparison.
        attention_value_scale=0.707,
        layer_types=hybrid_layer_types(NUM_LAYERS, FULL_ATTENTION_EVERY),
        sliding_window=SLIDING_WINDOW_TOKENS,
        rope_parameters={
            "full_attention": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "partial_rotary_factor": 0.334,
            },
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": 10_000.0,
                "partial_rotary_factor": 0.334,
            },
        },
        intermediate_size=512,  # the dense MLP of layer 0
        mlp_layer_types=["dense"] + ["sparse"] * (NUM_LAYERS - 1),
        n_routed_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=112,
        # The router scores each group by its top-2 experts, so a group needs >= 2 experts.
        n_group=2,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
        max_position_embeddings=MAX_POSITION_TOKENS,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=pad_token_id,
    )

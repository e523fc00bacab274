"""Random prompt workloads and benchmark checkpoints shared by the benchmarks."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

# The 1.35B-parameter GPU bench shape from DESIGN.md: 16 layers (2 full + 14 SWA), hidden 2048,
# 32 heads, KV heads 4 (SWA 8), q/k 192, v 128, window 128, dense MLP 8192, vocab 32000.
BENCH_1_35B = {
    "vocab_size": 32000,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 192,
    "v_head_dim": 128,
    "sliding_window": 128,
    "max_position_embeddings": 8192,
    "layer_types": ["full_attention" if i in (0, 8) else "sliding_attention" for i in range(16)],
    "mlp_layer_types": ["dense"] * 16,
}

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "checkpoints" / "hybatch-tiny"


def random_prompts(
    num_prompts: int,
    min_len: int,
    max_len: int,
    vocab_size: int,
    seed: int = 0,
    avoid: set[int] = frozenset(),
) -> list[list[int]]:
    rng = random.Random(seed)
    tokens = [t for t in range(vocab_size) if t not in avoid]
    return [[rng.choice(tokens) for _ in range(rng.randint(min_len, max_len))] for _ in range(num_prompts)]


def special_token_ids(checkpoint: Path) -> set[int]:
    path = checkpoint / "tokenizer.json"
    if not path.is_file():
        return set()
    return {t["id"] for t in json.loads(path.read_text()).get("added_tokens", [])}


def build_random_checkpoint(shape: dict, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A random-weight checkpoint of ``shape`` written with transformers (the peer needs it anyway)."""
    import torch
    from transformers import MiMoV2FlashConfig, MiMoV2FlashForCausalLM

    torch.manual_seed(seed)
    config = MiMoV2FlashConfig(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    with torch.device("cpu"):
        model = MiMoV2FlashForCausalLM(config).to(getattr(torch, dtype))
    path = Path(tempfile.mkdtemp(prefix="hybatch-bench-"))
    model.save_pretrained(path)
    return path

"""Writing the trained model as a Hugging Face checkpoint directory."""

from pathlib import Path

import torch
from transformers import GenerationConfig, MiMoV2FlashForCausalLM
from transformers.models.mimo_v2_flash.modeling_mimo_v2_flash import MiMoV2FlashTopkRouter


def save_bf16_checkpoint(model: MiMoV2FlashForCausalLM, out_dir: Path, eos_token_ids: list[int]) -> Path:
    """Convert `model` to bfloat16 in place and write `config.json`, `model.safetensors` and
    `generation_config.json` into `out_dir`; return the safetensors path.

    Router weights and `e_score_correction_bias` stay float32, as in the released MiMo-V2 checkpoints
    (the bias steers expert choice in steps far below bf16 resolution near 1.0).
    `generation_config.json` stops on every id in `eos_token_ids`.
    """
    model.to(torch.bfloat16)
    for router in (m for m in model.modules() if isinstance(m, MiMoV2FlashTopkRouter)):
        router.weight.data = router.weight.data.float()
        router.e_score_correction_bias.data = router.e_score_correction_bias.data.float()
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=eos_token_ids,
        pad_token_id=model.config.pad_token_id,
    )
    model.save_pretrained(out_dir)
    return out_dir / "model.safetensors"

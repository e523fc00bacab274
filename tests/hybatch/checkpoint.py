"""A tiny tokenizer-only checkpoint directory, built locally (models are never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
TRAINING_TEXT = [
    "hello world, this is a tiny tokenizer for tests.",
    "Count to three: one two three.",
    "The quick brown fox jumps over the lazy dog.",
]


def train_tiny_tokenizer() -> Tokenizer:
    """A byte-level BPE of ~320 tokens with the ChatML special tokens, trained on TRAINING_TEXT."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    return tokenizer


def write_tiny_checkpoint(
    directory: Path, *, context_tokens: int = 64, chat_template: str | None = CHATML_TEMPLATE
) -> Path:
    """Write tokenizer.json, config.json and tokenizer_config.json into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer()
    tokenizer.save(str(directory / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = {
        "model_type": "mimo_v2_flash",
        "max_position_embeddings": context_tokens,
        "vocab_size": vocab_size,
    }
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer_config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False}
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory

"""A tiny random checkpoint the whole service can run: model weights, tokenizer, chat template.

The model comes from ``tests/worker/checkpoints.py`` (transformers, random weights); the
tokenizer is a small byte-level BPE trained here on a few sentences, with ChatML special
tokens and template. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.hybatch.checkpoint import CHATML_TEMPLATE, train_tiny_tokenizer
from tests.worker.checkpoints import build_checkpoint

CONTEXT_TOKENS = 512


def build_service_checkpoint(directory: Path) -> Path:
    """Write a runnable checkpoint (config, weights, tokenizer files) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer()
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    build_checkpoint(
        directory,
        vocab_size=vocab_size,
        max_position_embeddings=CONTEXT_TOKENS,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "add_bos_token": False,
        "chat_template": CHATML_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


def shared_service_checkpoint(base_temp: Path) -> Path:
    """The checkpoint built once per test session under pytest's ``base_temp`` (job and e2e tests)."""
    directory = base_temp / "service-checkpoint" / "tiny-test"
    if not (directory / "tokenizer_config.json").is_file():  # written last: the build finished
        build_service_checkpoint(directory)
    return directory

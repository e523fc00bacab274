"""Prompt token ids as the engine will see them, from a checkpoint directory without torch.

Reads ``tokenizer.json`` (``tokenizers``), ``config.json`` (context length, vocabulary size)
and ``tokenizer_config.json`` (special tokens, Jinja chat template). The rules match
``worker/model/tokenizer.py``: chat prompts are the rendered template encoded without added
special tokens; completion prompts are encoded with special tokens (plus BOS when the config
sets ``add_bos_token``). The worker feeds these ids to the engine, so they are counted once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


class CheckpointFilesError(Exception):
    """The checkpoint directory lacks a file or setting needed to count prompt tokens."""


class ChatTemplateError(Exception):
    """The chat template refused the conversation (its ``raise_exception`` was called)."""


def _token_text(value: Any) -> str | None:
    # tokenizer_config stores special tokens as a string or as {"content": "..."}.
    return value.get("content") if isinstance(value, dict) else value


def _raise_from_template(message: str) -> None:
    raise ChatTemplateError(message)


@lru_cache(maxsize=8)
def _compiled_template(source: str) -> jinja2.Template:
    # Compiled once per template: compiling is nearly all the cost of rendering one conversation,
    # and validation renders every chat request of a batch. The environment is immutable.
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = _raise_from_template
    return environment.from_string(source)


@dataclass(frozen=True)
class PromptTokenizer:
    """Tokenizer plus the checkpoint facts request validation needs."""

    tokenizer: Tokenizer
    context_tokens: int  # max_position_embeddings: prompt plus output must fit
    vocab_size: int
    hidden_size: int | None  # an embedding's length (``dimensions`` at most); None: config.json omits it
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    add_bos_token: bool

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path) -> PromptTokenizer:
        """Load from a Hugging Face checkpoint directory; raises CheckpointFilesError."""
        return _load(Path(checkpoint_dir).resolve())

    def encode_completion(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=True).ids
        bos_id = self.tokenizer.token_to_id(self.bos_token) if self.bos_token else None
        if self.add_bos_token and bos_id is not None and (not ids or ids[0] != bos_id):
            ids = [bos_id, *ids]
        return ids

    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """The conversation as text, ending with the assistant's generation prompt (unless told not)."""
        if not self.chat_template:
            raise ChatTemplateError("The served model has no chat template; use /v1/completions.")
        try:
            return _compiled_template(self.chat_template).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except jinja2.TemplateError as error:
            raise ChatTemplateError(f"The chat template could not render the messages: {error}") from error

    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        return self.tokenizer.encode(self.render_chat(messages), add_special_tokens=False).ids

    def encode_chat_with_boundaries(
        self, messages: Sequence[dict[str, Any]]
    ) -> tuple[list[int], tuple[int, ...]]:
        """``encode_chat(messages)``, and the token offsets in it where each message ends: where the
        text of the first ``k`` messages rendered alone ends on a token boundary of the whole. The
        prefix cache keeps a window there, where later requests repeating the conversation so far
        (the same system prompt, the next turn) part from this one. One encode; one render per
        message (a compiled template)."""
        text = self.render_chat(messages)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        token_ends = {end: i + 1 for i, (_, end) in enumerate(encoding.offsets)}
        boundaries = []
        for k in range(1, len(messages) + 1):
            prefix = self.render_chat(messages[:k], add_generation_prompt=False)
            offset = token_ends.get(len(prefix)) if text.startswith(prefix) else None
            if offset is not None and offset < len(encoding.ids) and offset not in boundaries:
                boundaries.append(offset)
        return encoding.ids, tuple(boundaries)


@lru_cache(maxsize=4)
def _load(checkpoint_dir: Path) -> PromptTokenizer:
    tokenizer_path = checkpoint_dir / "tokenizer.json"
    config_path = checkpoint_dir / "config.json"
    for required in (tokenizer_path, config_path):
        if not required.is_file():
            raise CheckpointFilesError(f"{checkpoint_dir}: missing {required.name}")
    config = json.loads(config_path.read_text())
    if "max_position_embeddings" not in config:
        raise CheckpointFilesError(f"{config_path}: no max_position_embeddings")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer_config_path = checkpoint_dir / "tokenizer_config.json"
    tokenizer_config = (
        json.loads(tokenizer_config_path.read_text()) if tokenizer_config_path.is_file() else {}
    )
    chat_template = tokenizer_config.get("chat_template")
    template_file = checkpoint_dir / "chat_template.jinja"
    if chat_template is None and template_file.is_file():
        chat_template = template_file.read_text()
    return PromptTokenizer(
        tokenizer=tokenizer,
        context_tokens=int(config["max_position_embeddings"]),
        vocab_size=int(config.get("vocab_size", tokenizer.get_vocab_size(with_added_tokens=True))),
        hidden_size=int(config["hidden_size"]) if "hidden_size" in config else None,
        chat_template=chat_template,
        bos_token=_token_text(tokenizer_config.get("bos_token")),
        eos_token=_token_text(tokenizer_config.get("eos_token")),
        add_bos_token=bool(tokenizer_config.get("add_bos_token", False)),
    )

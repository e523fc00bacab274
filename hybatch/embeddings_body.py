"""Checks one request ``body`` for ``/v1/embeddings``.

``input`` is a string, a list of strings, a list of token ids (one input) or a list of lists of
token ids: each input becomes one embedding, in order. Text is tokenized as a ``/v1/completions``
prompt (special tokens, BOS where the checkpoint adds it). ``encoding_format`` is ``float``
(default) or ``base64`` (little-endian float32, as OpenAI sends it); ``dimensions`` asks for the
first N components, renormalised to unit length. The vector itself is defined in
``worker/engine/embed.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.request_body import BodyChecker, FieldProblem

MAX_INPUTS_PER_REQUEST = 2048  # OpenAI's limit on one request's input array
_KEYS = {"model", "input", "encoding_format", "dimensions", "user"}


class EncodingFormat(StrEnum):
    FLOAT = "float"
    BASE64 = "base64"


@dataclass(frozen=True)
class EmbeddingRequest:
    """What the engine embeds for one line: ``inputs`` as token ids, each one vector."""

    inputs: tuple[tuple[int, ...], ...]
    encoding_format: EncodingFormat
    dimensions: int | None  # None: the model's full hidden size

    @property
    def prompt_token_ids(self) -> tuple[int, ...]:
        """Every input's tokens end to end: what quotas, cost estimates and sharding count.

        Nothing runs this as one prompt; each input is embedded on its own.
        """
        return tuple(token for tokens in self.inputs for token in tokens)

    @property
    def max_tokens(self) -> int:
        """Embeddings generate nothing: no output tokens to reserve or bill."""
        return 0


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_embeddings_body(
    body: dict[str, Any], served_model: str, tokenizer: PromptTokenizer
) -> tuple[EmbeddingRequest | None, list[FieldProblem]]:
    """Validate an embeddings ``body``; return what to embed, or None and every problem."""
    checker = BodyChecker(body, BatchEndpoint.EMBEDDINGS, served_model)
    for key in body:
        if key not in _KEYS:
            checker.problem(
                "unsupported_parameter", key, f"Unsupported parameter '{key}' for /v1/embeddings."
            )
    checker.check_model()
    if body.get("user") is not None and not isinstance(body["user"], str):
        checker.problem("invalid_type", "user", "'user' must be a string.")
    encoding = body.get("encoding_format", EncodingFormat.FLOAT.value)
    if encoding not in set(EncodingFormat):
        checker.problem("invalid_value", "encoding_format", "'encoding_format' must be 'float' or 'base64'.")
    dimensions = checker.optional_positive_int("dimensions")
    if dimensions is not None and (tokenizer.hidden_size is None or dimensions > tokenizer.hidden_size):
        size = "unknown" if tokenizer.hidden_size is None else tokenizer.hidden_size
        checker.problem(
            "invalid_value",
            "dimensions",
            f"'dimensions' must be at most the served model's embedding size ({size}).",
        )
    inputs = _inputs(checker, tokenizer)
    if checker.problems or inputs is None:
        return None, checker.problems
    return EmbeddingRequest(tuple(inputs), EncodingFormat(encoding), dimensions), []


def _inputs(checker: BodyChecker, tokenizer: PromptTokenizer) -> list[tuple[int, ...]] | None:
    value = checker.require("input")
    if value is None:
        return None
    if isinstance(value, str) or (isinstance(value, list) and value and all(_is_token_id(t) for t in value)):
        named: list[tuple[str, Any]] = [("input", value)]  # one input: text, or token ids
    elif isinstance(value, list) and value:
        named = [(f"input[{index}]", item) for index, item in enumerate(value)]
    else:
        checker.problem(
            "invalid_type",
            "input",
            "'input' must be a string, an array of strings, an array of token ids or an array of such arrays.",
        )
        return None
    if len(named) > MAX_INPUTS_PER_REQUEST:
        checker.problem(
            "invalid_value", "input", f"'input' has {len(named)} items; at most {MAX_INPUTS_PER_REQUEST}."
        )
        return None
    checked = [_tokens(checker, where, item, tokenizer) for where, item in named]
    inputs = [tokens for tokens in checked if tokens is not None]
    return inputs if len(inputs) == len(named) else None


def _tokens(
    checker: BodyChecker, where: str, item: Any, tokenizer: PromptTokenizer
) -> tuple[int, ...] | None:
    if isinstance(item, str):
        if not item:
            checker.problem("invalid_value", where, f"'{where}' is an empty string.")
            return None
        tokens = tuple(tokenizer.encode_completion(item))
    elif isinstance(item, list) and item and all(_is_token_id(t) for t in item):
        if not all(0 <= t < tokenizer.vocab_size for t in item):
            checker.problem("invalid_value", where, f"Token ids must be in [0, {tokenizer.vocab_size}).")
            return None
        tokens = tuple(item)
    else:
        checker.problem("invalid_type", where, f"'{where}' must be a non-empty string or array of token ids.")
        return None
    if len(tokens) > tokenizer.context_tokens:
        checker.problem(
            "too_many_tokens",
            where,
            f"'{where}' has {len(tokens)} tokens; the model's context is {tokenizer.context_tokens} tokens.",
        )
        return None
    return tokens

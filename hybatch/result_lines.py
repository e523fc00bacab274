"""Lines of a batch's output and error files, field for field as OpenAI's.

Each line is ``{id, custom_id, response: {status_code, request_id, body} | null,
error: {code, message} | null}``. Every response body's ``usage`` has ``prompt_tokens``,
``completion_tokens``, ``total_tokens`` and ``prompt_tokens_details.cached_tokens``
(cached tokens are the prompt tokens served from the prefix cache, so cached <= prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from hybatch.ids import new_id
from hybatch.models import BatchEndpoint


@dataclass(frozen=True)
class LinePrice:
    """What a finished request cost when it was recorded: the usage record keeps it, and the line's
    ``x_billing`` shows it. ``amount`` is unrounded, in major units of ``currency``."""

    amount: Decimal
    currency: str
    price_version: str


@dataclass(frozen=True)
class TokenUsage:
    """The three metered token classes of one finished request."""

    cache_hit_input_tokens: int
    cache_miss_input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if min(self.cache_hit_input_tokens, self.cache_miss_input_tokens, self.output_tokens) < 0:
            raise ValueError(f"token counts must be >= 0: {self}")

    @property
    def prompt_tokens(self) -> int:
        return self.cache_hit_input_tokens + self.cache_miss_input_tokens

    def as_openai_usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_hit_input_tokens},
        }


def success_line(
    custom_id: str,
    *,
    endpoint: BatchEndpoint,
    model: str,
    text: str,
    finish_reason: str,
    usage: TokenUsage,
    created_at: datetime,
) -> dict[str, Any]:
    """An output-file line for a request the engine finished (HTTP 200 inside the line)."""
    created = int(created_at.timestamp())
    if endpoint is BatchEndpoint.CHAT_COMPLETIONS:
        body: dict[str, Any] = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage.as_openai_usage(),
        }
    else:
        body = {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage.as_openai_usage(),
        }
    return success_envelope(custom_id, body)


def success_envelope(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The output-file line carrying ``body`` as the HTTP 200 answer to ``custom_id``."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": new_id("req_"), "body": body},
        "error": None,
    }


def error_line(custom_id: str, *, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a request that produced no output (e.g. ``batch_expired``)."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }

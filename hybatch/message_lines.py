"""Output lines of a ``/v1/messages`` batch: the OpenAI line envelope around an Anthropic Message.

The envelope stays ``{id, custom_id, response: {status_code, request_id, body}, error}`` so that
result files, counters and the ledger treat every batch alike; only the body differs. It is a
Message as Anthropic's API returns it::

    {id: "msg_...", type: "message", role: "assistant", model, content: [{type: "text", text}],
     stop_reason: "end_turn" | "max_tokens" | "stop_sequence", stop_sequence,
     usage: {input_tokens, cache_read_input_tokens, cache_creation_input_tokens, output_tokens}}

Anthropic's ``input_tokens`` excludes the tokens read from the cache, so it is our cache-miss
input; ``cache_read_input_tokens`` is our cache-hit input. Writing to the prefix cache costs
nothing extra here (every computed prompt is cached without being asked), so
``cache_creation_input_tokens`` is always 0.
"""

from __future__ import annotations

from typing import Any

from hybatch.ids import new_id
from hybatch.result_lines import TokenUsage


def anthropic_usage(usage: TokenUsage) -> dict[str, int]:
    return {
        "input_tokens": usage.cache_miss_input_tokens,
        "cache_read_input_tokens": usage.cache_hit_input_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": usage.output_tokens,
    }


def stop_reason(finish_reason: str, stop: int | str | None) -> tuple[str, str | None]:
    """Anthropic's ``(stop_reason, stop_sequence)`` for how the engine ended a request.

    ``finish_reason`` is the engine's ``"stop"`` / ``"length"``; ``stop`` what ended it: the
    matched stop string, an end-of-turn token id, or None.
    """
    if finish_reason == "length":
        return "max_tokens", None
    if isinstance(stop, str):
        return "stop_sequence", stop
    return "end_turn", None


def message_line(
    custom_id: str,
    *,
    model: str,
    text: str,
    finish_reason: str,
    stop: int | str | None,
    usage: TokenUsage,
) -> dict[str, Any]:
    """An output-file line whose body is the Anthropic Message for a request the engine finished."""
    reason, sequence = stop_reason(finish_reason, stop)
    body = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(usage),
    }
    return {
        "id": new_id("batch_req_"),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": new_id("req_"), "body": body},
        "error": None,
    }

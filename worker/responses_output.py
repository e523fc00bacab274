"""The output line of a ``/v1/responses`` request: a Response object, as OpenAI's Responses API sends.

One assistant message with one ``output_text`` part. A request cut short by its output budget
(``max_output_tokens``, or the context when none was given) is ``status: "incomplete"`` with
``incomplete_details.reason = "max_output_tokens"``, as OpenAI reports it; otherwise
``completed``. Usage is in the Responses shape: ``input_tokens`` with
``input_tokens_details.cached_tokens`` (prompt tokens served from the prefix cache, so cached <=
input; ``cache_write_tokens`` 0), ``output_tokens`` with ``reasoning_tokens`` 0, ``total_tokens``. The request's
``instructions``, ``metadata``, ``max_output_tokens`` and ``user`` are repeated as sent;
``temperature`` and ``top_p`` as they ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hybatch.ids import new_id
from hybatch.request_body import GenerationRequest
from hybatch.result_lines import TokenUsage, success_envelope


def responses_usage(usage: TokenUsage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        # No separate cache-write charge exists here (computed prompt tokens are cache-miss input),
        # so none are reported as cache writes.
        "input_tokens_details": {"cached_tokens": usage.cache_hit_input_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


def response_line(
    custom_id: str,
    generation: GenerationRequest,
    *,
    model: str,
    text: str,
    finish_reason: str,
    usage: TokenUsage,
    finished_at: datetime,
) -> dict[str, Any]:
    """The output-file line whose body is the Response object of a finished request.

    ``finish_reason`` as the engine reports it; the response is created and completed at
    ``finished_at`` (a batch request has no earlier moment of its own).
    """
    echo = generation.echo or {}
    is_cut_short = finish_reason == "length"
    status = "incomplete" if is_cut_short else "completed"
    message = {
        "type": "message",
        "id": new_id("msg_"),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    finished = int(finished_at.timestamp())
    body = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": finished,
        "completed_at": None if is_cut_short else finished,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if is_cut_short else None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "metadata": echo.get("metadata") or {},
        "model": model,
        "output": [message],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,  # nothing is kept for previous_response_id: the batch's output file is the record
        "temperature": generation.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": generation.top_p,
        "truncation": "disabled",
        "usage": responses_usage(usage),
        "user": echo.get("user"),
    }
    return success_envelope(custom_id, body)

"""Our output and error lines as Anthropic's results, and the Message body the worker writes."""

from __future__ import annotations

import pytest

from hybatch.message_lines import message_line, stop_reason
from hybatch.message_results import individual_result
from hybatch.result_lines import TokenUsage, error_line

USAGE = TokenUsage(cache_hit_input_tokens=32, cache_miss_input_tokens=7, output_tokens=5)


def test_a_message_line_holds_an_anthropic_message_with_cache_reads_apart() -> None:
    line = message_line("a", model="m", text="hi", finish_reason="stop", stop="END", usage=USAGE)
    body = line["response"]["body"]
    assert line["custom_id"] == "a" and line["error"] is None and line["response"]["status_code"] == 200
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["content"] == [{"type": "text", "text": "hi"}] and body["model"] == "m"
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    assert body["usage"] == {
        "input_tokens": 7,
        "cache_read_input_tokens": 32,
        "cache_creation_input_tokens": 0,
        "output_tokens": 5,
    }


@pytest.mark.parametrize(
    ("finish_reason", "stop", "expected"),
    [
        ("length", None, ("max_tokens", None)),
        ("length", "x", ("max_tokens", None)),
        ("stop", 2, ("end_turn", None)),  # an end-of-turn token id
        ("stop", None, ("end_turn", None)),
        ("stop", "\n\n", ("stop_sequence", "\n\n")),
    ],
)
def test_stop_reasons(finish_reason: str, stop, expected) -> None:
    assert stop_reason(finish_reason, stop) == expected


def test_a_succeeded_result_carries_the_message_and_x_billing() -> None:
    line = message_line("a", model="m", text="hi", finish_reason="length", stop=None, usage=USAGE)
    line["x_billing"] = {"cost": "0.01"}
    result = individual_result(line)
    assert result == {
        "custom_id": "a",
        "result": {"type": "succeeded", "message": line["response"]["body"]},
        "x_billing": {"cost": "0.01"},
    }


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("batch_cancelled", {"type": "canceled"}),
        ("batch_expired", {"type": "expired"}),
        (
            "invalid_request",
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "why"}},
            },
        ),
        (
            "skipped_budget",
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "why"}},
            },
        ),
        (
            "batch_failed",
            {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "why"}}},
        ),
    ],
)
def test_error_lines_become_canceled_expired_or_errored(code: str, expected: dict) -> None:
    assert individual_result(error_line("b", code=code, message="why")) == {
        "custom_id": "b",
        "result": expected,
    }

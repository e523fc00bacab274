"""The Response object on a ``/v1/responses`` output line: its usage carries the request's token classes
(the job test's prompts share no cached prefix, so it cannot tell cached tokens from none)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from openai.types.responses import Response

from hybatch.request_body import GenerationRequest
from hybatch.result_lines import TokenUsage
from worker.responses_output import response_line

FINISHED_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _request(**echo) -> GenerationRequest:
    return GenerationRequest(
        prompt_token_ids=tuple(range(31)),
        max_tokens=16,
        temperature=0.0,
        top_p=1.0,
        seed=None,
        stop=(),
        echo=echo,
    )


@pytest.mark.parametrize(("finish_reason", "status"), [("stop", "completed"), ("length", "incomplete")])
def test_usage_is_the_token_classes_and_the_sdk_parses_it(finish_reason: str, status: str) -> None:
    usage = TokenUsage(cache_hit_input_tokens=16, cache_miss_input_tokens=15, output_tokens=2)
    line = response_line(
        "r1",
        _request(instructions="Answer in one word.", max_output_tokens=16, metadata={"team": "geo"}),
        model="tiny-test",
        text="Paris",
        finish_reason=finish_reason,
        usage=usage,
        finished_at=FINISHED_AT,
    )
    assert line["custom_id"] == "r1" and line["error"] is None and line["response"]["status_code"] == 200
    response = Response.model_validate(line["response"]["body"])
    assert response.status == status and response.output_text == "Paris"
    assert response.usage.input_tokens == 31  # cache hit + cache miss
    assert response.usage.input_tokens_details.cached_tokens == 16  # the cache-hit input
    assert response.usage.output_tokens == 2 and response.usage.total_tokens == 33
    assert response.instructions == "Answer in one word." and response.metadata == {"team": "geo"}
    assert response.created_at == FINISHED_AT.timestamp()
    if status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens" and response.completed_at is None
    else:
        assert response.incomplete_details is None and response.completed_at == FINISHED_AT.timestamp()

"""Unknown URLs: OpenAI's "Invalid URL", except the direct inference endpoints, which point at batches."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import SERVED_MODEL, Headers, assert_openai_error

DIRECT_CALLS = [
    ("/v1/chat/completions", {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"model": SERVED_MODEL, "prompt": "hi"}),
    ("/v1/embeddings", {"model": SERVED_MODEL, "input": "hi"}),
    ("/v1/responses", {"model": SERVED_MODEL, "input": "hi"}),
]


@pytest.mark.parametrize(("path", "body"), DIRECT_CALLS)
def test_a_direct_inference_call_says_this_service_runs_batches(
    client: TestClient, alice: Headers, path: str, body: dict
) -> None:
    error = assert_openai_error(client.post(path, headers=alice, json=body), 404)
    message = error["message"]
    assert "batches only" in message and f"POST {path}" in message, message
    assert "/v1/files" in message and "/v1/batches" in message, message
    assert "Invalid URL" not in message
    assert error["type"] == "invalid_request_error" and error["param"] is None


def test_any_other_unknown_url_is_invalid_url(client: TestClient, alice: Headers) -> None:
    error = assert_openai_error(client.post("/v1/nothing-here", headers=alice, json={}), 404)
    assert error["message"] == "Invalid URL (POST /v1/nothing-here)"

"""Message Batches at the edges, in-process: body size, quotas, malformed bodies (Anthropic-shaped)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hybatch.settings import Settings
from tests.api.helpers import SERVED_MODEL


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # The repository's default checkpoint tokenizes; the quota is a few requests' worth of prompt.
    # A body may be max_file_bytes plus 1 MiB (the multipart allowance) before the 413.
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        model_name=SERVED_MODEL,
        max_file_bytes=4096,
        enqueued_token_limit=60,
    )


def _body(count: int, text: str = "hello") -> dict:
    params = {"model": SERVED_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    return {"requests": [{"custom_id": f"r{i}", "params": params} for i in range(count)]}


def _anthropic_error(response, status_code: int, error_type: str) -> str:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert body["error"]["type"] == error_type and body["error"]["message"]
    return body["error"]["message"]


def test_a_body_over_the_limit_is_refused_in_anthropic_shape(client: TestClient, new_key) -> None:
    headers = {"x-api-key": new_key("big"), "anthropic-version": "2023-06-01"}
    response = client.post("/v1/messages/batches", headers=headers, json=_body(1, "x" * (1024 * 1024 + 8192)))
    _anthropic_error(response, 413, "request_too_large")


def test_the_enqueued_token_quota_counts_message_batches(
    client: TestClient, new_key, enqueued: list[str]
) -> None:
    headers = {"x-api-key": new_key("quota")}
    first = client.post("/v1/messages/batches", headers=headers, json=_body(1))
    assert first.status_code == 200, first.text
    # Unfinished, the first batch holds its prompt tokens: enough more of them pass the limit.
    refused = client.post("/v1/messages/batches", headers=headers, json=_body(8))
    assert "Enqueued token limit" in _anthropic_error(refused, 400, "invalid_request_error")
    assert enqueued == [first.json()["id"]]
    listed = client.get("/v1/messages/batches", headers=headers).json()
    assert [b["id"] for b in listed["data"]] == [first.json()["id"]]
    # Only the accepted batch's requests are kept, as its input file.
    kept = client.get("/v1/files", headers={"Authorization": f"Bearer {headers['x-api-key']}"}).json()
    assert len(kept["data"]) == 1 and kept["data"][0]["purpose"] == "batch"


def test_malformed_bodies_and_parameters(client: TestClient, new_key) -> None:
    headers = {"x-api-key": new_key("shapes")}
    missing = client.post("/v1/messages/batches", headers=headers, json={})
    assert "requests" in _anthropic_error(missing, 400, "invalid_request_error")
    extra = client.post("/v1/messages/batches", headers=headers, json={**_body(1), "stream": True})
    _anthropic_error(extra, 400, "invalid_request_error")
    empty = client.post("/v1/messages/batches", headers=headers, json={"requests": []})
    assert "at least one" in _anthropic_error(empty, 400, "invalid_request_error")
    both = client.get("/v1/messages/batches?before_id=a&after_id=b", headers=headers)
    _anthropic_error(both, 400, "invalid_request_error")
    over = client.get("/v1/messages/batches?limit=1001", headers=headers)
    _anthropic_error(over, 400, "invalid_request_error")
    unknown_cursor = client.get("/v1/messages/batches?after_id=msgbatch_nope", headers=headers)
    _anthropic_error(unknown_cursor, 404, "not_found_error")

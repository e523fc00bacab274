"""Helpers for API tests: auth headers, JSONL bodies, uploads, OpenAI error checks."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

SERVED_MODEL = "tiny-test"
Headers = dict[str, str]


def bearer(secret: str) -> Headers:
    return {"Authorization": f"Bearer {secret}"}


def chat_line(custom_id: str, content: str = "hello") -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": SERVED_MODEL, "messages": [{"role": "user", "content": content}]},
    }


def jsonl(*lines: dict) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: TestClient, headers: Headers, content: bytes, purpose: str = "batch") -> dict:
    response = client.post(
        "/v1/files", headers=headers, files={"file": ("in.jsonl", content)}, data={"purpose": purpose}
    )
    assert response.status_code == 200, response.text
    return response.json()


def create_batch(client: TestClient, headers: Headers, file_id: str, **extra) -> dict:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = client.post("/v1/batches", headers=headers, json={**body, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def assert_openai_error(
    response, status_code: int, code: str | None = None, param: str | None = None
) -> dict:
    assert response.status_code == status_code, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] in ("invalid_request_error", "server_error")
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error

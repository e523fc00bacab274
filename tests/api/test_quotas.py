"""Enqueued-token quotas: batches refused at creation with token_limit_exceeded, and GET /v1/quotas."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch import accounts, quotas
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.models import Batch, BatchStatus
from hybatch.settings import Settings
from tests.api.helpers import SERVED_MODEL, Headers, assert_openai_error, bearer

LIMIT = 50


def _lines(num_lines: int, prompt_tokens: int) -> bytes:
    """Completion requests with token-id prompts: the prompt is exactly ``prompt_tokens`` tokens."""
    body = {"model": SERVED_MODEL, "max_tokens": 4}
    return "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": body | {"prompt": [100 + i + j for j in range(prompt_tokens)]},
            }
        )
        + "\n"
        for i in range(num_lines)
    ).encode()


@pytest.fixture
def limited(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"enqueued_token_limit": LIMIT}), enqueue=lambda _id: None)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def _create(client: TestClient, headers: Headers, content: bytes):
    upload = client.post(
        "/v1/files", headers=headers, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    assert upload.status_code == 200, upload.text
    body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/completions", "completion_window": "24h"}
    return client.post("/v1/batches", headers=headers, json=body)


def _quota(client: TestClient, headers: Headers) -> dict:
    response = client.get("/v1/quotas", headers=headers)
    assert response.status_code == 200, response.text
    [quota] = response.json()["data"]
    return quota


def test_without_a_limit_nothing_is_counted(client: TestClient, alice: Headers) -> None:
    assert _create(client, alice, _lines(3, 10)).status_code == 200
    assert _quota(client, alice) == {
        "object": "quota",
        "model": SERVED_MODEL,
        "enqueued_prompt_tokens": 0,
        "limit": None,
        "remaining": None,
    }


def test_a_batch_that_would_pass_the_limit_is_refused_until_others_finish(
    limited: TestClient, alice: Headers, bob: Headers, settings: Settings
) -> None:
    first = _create(limited, alice, _lines(3, 10))  # 30 prompt tokens
    assert first.status_code == 200, first.text
    assert _quota(limited, alice) == {
        "object": "quota",
        "model": SERVED_MODEL,
        "enqueued_prompt_tokens": 30,
        "limit": LIMIT,
        "remaining": 20,
    }
    error = assert_openai_error(_create(limited, alice, _lines(3, 10)), 400, code="token_limit_exceeded")
    assert "30 prompt tokens" in error["message"] and "limit is 50" in error["message"]
    assert _create(limited, alice, _lines(2, 10)).status_code == 200  # 20 more: exactly the limit
    assert _quota(limited, bob)["enqueued_prompt_tokens"] == 0  # per account

    engine = make_engine(settings.database_url)
    with engine.begin() as connection:  # the first batch ends: its tokens are no longer enqueued
        connection.execute(
            sa.update(Batch).where(Batch.id == first.json()["id"]).values(status=BatchStatus.COMPLETED)
        )
    engine.dispose()
    assert _quota(limited, alice)["enqueued_prompt_tokens"] == 20
    assert _create(limited, alice, _lines(3, 10)).status_code == 200


def test_an_account_may_have_its_own_limit(limited: TestClient, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        big = accounts.create_account(session, "big")
        secret = accounts.create_api_key(session, big.id).secret
        quotas.set_token_limit(session, big.id, SERVED_MODEL, 1000)
    engine.dispose()
    headers = bearer(secret)
    assert _create(limited, headers, _lines(6, 10)).status_code == 200  # 60 > the default 50
    assert _quota(limited, headers)["limit"] == 1000

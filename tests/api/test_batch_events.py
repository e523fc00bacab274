"""The batch endings the API itself makes announce themselves to the account's webhooks too: a cancel
before any worker took the batch (batch.cancelled), and a batch the broker refused (batch.failed).
The worker's endings go through ``move_batch`` (tests/hybatch/test_webhooks.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hybatch.db import make_engine, make_session_factory
from hybatch.models import WebhookDelivery
from hybatch.settings import Settings
from tests.api.helpers import Headers, assert_openai_error, chat_line, create_batch, jsonl, upload


@pytest.fixture
def settings(settings: Settings) -> Settings:  # the endpoints of these tests are on loopback
    return settings.model_copy(update={"webhook_allow_private": True})


def _subscribe(client: TestClient, headers: Headers, event_types: list[str]) -> str:
    response = client.post(
        "/v1/webhook_endpoints",
        headers=headers,
        json={"name": "hook", "url": "http://127.0.0.1:9/hook", "event_types": event_types},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _deliveries(settings: Settings) -> list[tuple[str, str, str]]:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        rows = session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at)).all()
        found = [(row.endpoint_id, row.event_type, row.payload["data"]["id"]) for row in rows]
    engine.dispose()
    return found


def test_a_cancel_before_any_worker_took_the_batch_sends_batch_cancelled(
    client: TestClient, alice: Headers, bob: Headers, settings: Settings
) -> None:
    endpoint_id = _subscribe(client, alice, ["batch.cancelled"])
    _subscribe(client, alice, ["batch.completed"])  # not subscribed to the cancel
    _subscribe(client, bob, ["batch.cancelled"])  # another account's
    batch = create_batch(client, alice, upload(client, alice, jsonl(chat_line("a")))["id"])
    assert _deliveries(settings) == []
    cancelled = client.post(f"/v1/batches/{batch['id']}/cancel", headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert _deliveries(settings) == [(endpoint_id, "batch.cancelled", batch["id"])]
    client.post(f"/v1/batches/{batch['id']}/cancel", headers=alice)  # cancelling twice sends nothing more
    assert len(_deliveries(settings)) == 1


def test_a_batch_the_broker_refused_sends_batch_failed(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    endpoint_id = _subscribe(client, alice, ["batch.failed", "batch.cancelled"])
    input_file_id = upload(client, alice, jsonl(chat_line("a")))["id"]

    def broken_broker(_batch_id: str) -> None:
        raise ConnectionError("broker down")

    client.app.state.enqueue = broken_broker
    response = client.post(
        "/v1/batches",
        headers=alice,
        json={"input_file_id": input_file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert_openai_error(response, 503, code="enqueue_failed")
    [batch] = client.get("/v1/batches", headers=alice).json()["data"]
    assert _deliveries(settings) == [(endpoint_id, "batch.failed", batch["id"])]

"""Batches API: create (enqueued after commit), retrieve, list, cancel, and refusals."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.db import make_engine, make_session_factory
from hybatch.leases import Lease, new_lease_owner, take_batch
from hybatch.models import Batch, BatchStatus, utc_now
from hybatch.settings import Settings
from tests.api.helpers import (
    SERVED_MODEL,
    Headers,
    assert_openai_error,
    chat_line,
    create_batch,
    jsonl,
    upload,
)


@pytest.fixture
def input_file_id(client: TestClient, alice: Headers) -> str:
    return upload(client, alice, jsonl(chat_line("a"), chat_line("b")))["id"]


def _set_batch(settings: Settings, batch_id: str, **values) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(sa.update(Batch).where(Batch.id == batch_id).values(**values))
    engine.dispose()


def test_create_returns_a_validating_batch_and_enqueues_it(
    client: TestClient, alice: Headers, input_file_id: str, enqueued: list[str]
) -> None:
    batch = create_batch(client, alice, input_file_id, metadata={"team": "search"})
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert batch["status"] == "validating" and batch["model"] == SERVED_MODEL
    assert batch["endpoint"] == "/v1/chat/completions" and batch["input_file_id"] == input_file_id
    assert batch["completion_window"] == "24h" and batch["metadata"] == {"team": "search"}
    assert batch["expires_at"] - batch["created_at"] == int(timedelta(hours=24).total_seconds())
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert (
        batch["usage"]["input_tokens"] == 0 and batch["usage"]["input_tokens_details"]["cached_tokens"] == 0
    )
    for field in ("output_file_id", "error_file_id", "errors", "in_progress_at", "cancelled_at"):
        assert batch[field] is None
    assert enqueued == [batch["id"]]
    assert client.get(f"/v1/batches/{batch['id']}", headers=alice).json() == batch


def test_enqueue_happens_after_commit(
    settings: Settings, client: TestClient, alice: Headers, input_file_id: str
) -> None:
    seen_statuses = []
    session_factory = make_session_factory(make_engine(settings.database_url))

    def enqueue(batch_id: str) -> None:
        with session_factory() as session:  # a separate connection sees only committed rows
            seen_statuses.append(session.scalar(sa.select(Batch.status).where(Batch.id == batch_id)))

    client.app.state.enqueue = enqueue
    create_batch(client, alice, input_file_id)
    assert seen_statuses == [BatchStatus.VALIDATING]


def test_failed_enqueue_marks_the_batch_failed(
    client: TestClient, alice: Headers, input_file_id: str
) -> None:
    def broken_broker(_batch_id: str) -> None:
        raise ConnectionError("broker down")

    client.app.state.enqueue = broken_broker
    response = client.post(
        "/v1/batches",
        headers=alice,
        json={"input_file_id": input_file_id, "endpoint": "/v1/completions", "completion_window": "24h"},
    )
    assert_openai_error(response, 503, code="enqueue_failed")
    [batch] = client.get("/v1/batches", headers=alice).json()["data"]
    assert batch["status"] == "failed" and batch["failed_at"] is not None
    assert batch["errors"]["data"][0]["code"] == "enqueue_failed"


@pytest.mark.parametrize(
    ("override", "param"),
    [
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"endpoint": "/v1/images/generations"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"input_file_id": "file-unknown"}, "id"),
    ],
)
def test_invalid_create_requests_create_nothing(
    client: TestClient, alice: Headers, input_file_id: str, enqueued: list[str], override: dict, param: str
) -> None:
    body = {"input_file_id": input_file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = client.post("/v1/batches", headers=alice, json={**body, **override})
    expected_status = 404 if param == "id" else 400
    assert_openai_error(response, expected_status, param=param)
    assert client.get("/v1/batches", headers=alice).json()["data"] == [] and enqueued == []


def test_body_shape_errors_are_openai_shaped(client: TestClient, alice: Headers) -> None:
    missing = client.post("/v1/batches", headers=alice, json={"endpoint": "/v1/completions"})
    assert_openai_error(missing, 400, code="missing_required_parameter", param="input_file_id")
    extra = client.post(
        "/v1/batches",
        headers=alice,
        json={"input_file_id": "f", "endpoint": "/v1/completions", "completion_window": "24h", "x": 1},
    )
    assert_openai_error(extra, 400, code="unknown_parameter", param="x")
    not_json = client.post("/v1/batches", headers={**alice, "Content-Type": "application/json"}, content=b"{")
    assert_openai_error(not_json, 400)


def test_other_completion_windows_come_from_settings(
    client: TestClient, alice: Headers, input_file_id: str
) -> None:
    batch = create_batch(client, alice, input_file_id, completion_window="1h")
    assert batch["expires_at"] - batch["created_at"] == 3600


def test_list_pages_newest_first(client: TestClient, alice: Headers, input_file_id: str) -> None:
    ids = [create_batch(client, alice, input_file_id)["id"] for _ in range(5)]
    first = client.get("/v1/batches", headers=alice, params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[:2:-1][:2] or [b["id"] for b in first["data"]] == ids[
        ::-1
    ][:2]
    assert first["has_more"] is True and first["last_id"] == first["data"][-1]["id"]
    seen = [b["id"] for b in first["data"]]
    after = first["last_id"]
    while True:
        page = client.get("/v1/batches", headers=alice, params={"limit": 2, "after": after}).json()
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    assert_openai_error(
        client.get("/v1/batches", headers=alice, params={"after": "batch_nope"}), 400, param="after"
    )
    assert_openai_error(client.get("/v1/batches", headers=alice, params={"limit": 101}), 400, param="limit")


def test_cancel_before_a_worker_claims_it_finishes_at_once(
    client: TestClient, alice: Headers, input_file_id: str
) -> None:
    batch_id = create_batch(client, alice, input_file_id)["id"]
    cancelled = client.post(f"/v1/batches/{batch_id}/cancel", headers=alice).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelling_at"] is not None and cancelled["cancelled_at"] is not None
    again = client.post(f"/v1/batches/{batch_id}/cancel", headers=alice)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_cancel_of_a_claimed_batch_leaves_it_to_the_worker(
    settings: Settings, client: TestClient, alice: Headers, input_file_id: str
) -> None:
    batch_id = create_batch(client, alice, input_file_id)["id"]
    session_factory = make_session_factory(make_engine(settings.database_url))
    lease = Lease(owner=new_lease_owner(), duration=timedelta(seconds=30))
    with session_factory() as session:
        assert take_batch(session, batch_id, lease) is True
        assert take_batch(session, batch_id, lease) is True  # a redelivered task may go on
    cancelling = client.post(f"/v1/batches/{batch_id}/cancel", headers=alice).json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelled_at"] is None
    assert client.post(f"/v1/batches/{batch_id}/cancel", headers=alice).json()["status"] == "cancelling"


def test_worker_does_not_claim_a_cancelled_batch(
    settings: Settings, client: TestClient, alice: Headers, input_file_id: str
) -> None:
    batch_id = create_batch(client, alice, input_file_id)["id"]
    client.post(f"/v1/batches/{batch_id}/cancel", headers=alice)
    with make_session_factory(make_engine(settings.database_url))() as session:
        assert take_batch(session, batch_id, Lease(new_lease_owner(), timedelta(seconds=30))) is False


@pytest.mark.parametrize("status", [BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.FINALIZING])
def test_finished_batches_cannot_be_cancelled(
    settings: Settings, client: TestClient, alice: Headers, input_file_id: str, status: BatchStatus
) -> None:
    batch_id = create_batch(client, alice, input_file_id)["id"]
    _set_batch(settings, batch_id, status=status, completed_at=utc_now())
    response = client.post(f"/v1/batches/{batch_id}/cancel", headers=alice)
    assert_openai_error(response, 409, code="batch_not_cancellable")
    assert client.get(f"/v1/batches/{batch_id}", headers=alice).json()["status"] == status.value


def test_input_must_have_purpose_batch(
    settings: Settings, client: TestClient, alice: Headers, input_file_id: str
) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("update files set purpose = 'batch_output' where id = :id"), {"id": input_file_id}
        )
    engine.dispose()
    response = client.post(
        "/v1/batches",
        headers=alice,
        json={"input_file_id": input_file_id, "endpoint": "/v1/completions", "completion_window": "24h"},
    )
    assert_openai_error(response, 400, param="input_file_id")


def test_models_lists_the_served_model(client: TestClient, alice: Headers) -> None:
    models = client.get("/v1/models", headers=alice).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [SERVED_MODEL]
    assert client.get(f"/v1/models/{SERVED_MODEL}", headers=alice).json()["object"] == "model"
    assert_openai_error(client.get("/v1/models/gpt-4o", headers=alice), 404, code="model_not_found")


def test_default_app_builds_a_celery_enqueuer(settings: Settings) -> None:
    app = create_app(settings)
    assert app.state.enqueue.queue == settings.task_queue
    app.state.engine.dispose()

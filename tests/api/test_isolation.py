"""One account can never see, list, download, delete or cancel another account's objects."""

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import Headers, assert_openai_error, chat_line, create_batch, jsonl, upload


@pytest.fixture
def alices_objects(client: TestClient, alice: Headers) -> tuple[str, str]:
    file_id = upload(client, alice, jsonl(chat_line("a")))["id"]
    batch_id = create_batch(client, alice, file_id)["id"]
    return file_id, batch_id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files/{file}"),
        ("GET", "/v1/files/{file}/content"),
        ("DELETE", "/v1/files/{file}"),
        ("GET", "/v1/batches/{batch}"),
        ("POST", "/v1/batches/{batch}/cancel"),
    ],
)
def test_foreign_ids_are_404(
    client: TestClient, alice: Headers, bob: Headers, alices_objects: tuple[str, str], method: str, path: str
) -> None:
    file_id, batch_id = alices_objects
    url = path.format(file=file_id, batch=batch_id)
    assert_openai_error(client.request(method, url, headers=bob), 404)
    # Alice's objects are untouched by Bob's attempts.
    assert client.get(f"/v1/files/{file_id}", headers=alice).status_code == 200
    assert client.get(f"/v1/batches/{batch_id}", headers=alice).json()["status"] == "validating"


def test_lists_show_only_own_objects(
    client: TestClient, alice: Headers, bob: Headers, alices_objects: tuple[str, str]
) -> None:
    assert client.get("/v1/files", headers=bob).json()["data"] == []
    assert client.get("/v1/batches", headers=bob).json()["data"] == []
    file_id, batch_id = alices_objects
    assert_openai_error(client.get("/v1/batches", headers=bob, params={"after": batch_id}), 400)
    assert_openai_error(client.get("/v1/files", headers=bob, params={"after": file_id}), 400)


def test_foreign_input_file_cannot_start_a_batch(
    client: TestClient, bob: Headers, alices_objects: tuple[str, str], enqueued: list[str]
) -> None:
    file_id, _ = alices_objects
    response = client.post(
        "/v1/batches",
        headers=bob,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert_openai_error(response, 404)
    assert client.get("/v1/batches", headers=bob).json()["data"] == [] and len(enqueued) == 1

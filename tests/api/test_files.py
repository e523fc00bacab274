"""Files API: upload checks, reads, downloads, deletes; a rejected upload leaves nothing behind."""

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.db import make_engine
from hybatch.settings import Settings
from tests.api.helpers import Headers, assert_openai_error, chat_line, create_batch, jsonl, upload

GOOD = jsonl(chat_line("a"), chat_line("b"))


def _stored_files(settings: Settings) -> list[Path]:
    root = settings.files_dir
    return sorted(root.iterdir()) if root.exists() else []


def _file_rows(settings: Settings) -> int:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("select count(*) from files")).scalar_one()
    finally:
        engine.dispose()


def test_upload_retrieve_download_delete(client: TestClient, alice: Headers, settings: Settings) -> None:
    created = upload(client, alice, GOOD)
    assert created["id"].startswith("file-")
    assert created["object"] == "file" and created["purpose"] == "batch"
    assert created["bytes"] == len(GOOD) and created["filename"] == "in.jsonl"
    assert created["status"] == "processed" and isinstance(created["created_at"], int)

    assert client.get(f"/v1/files/{created['id']}", headers=alice).json() == created
    content = client.get(f"/v1/files/{created['id']}/content", headers=alice)
    assert content.status_code == 200 and content.content == GOOD

    deleted = client.delete(f"/v1/files/{created['id']}", headers=alice)
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert_openai_error(client.get(f"/v1/files/{created['id']}", headers=alice), 404, param="id")
    assert _stored_files(settings) == []


def test_list_orders_filters_and_pages(client: TestClient, alice: Headers) -> None:
    ids = [upload(client, alice, GOOD)["id"] for _ in range(3)]
    listed = client.get("/v1/files", headers=alice).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [f["id"] for f in listed["data"]] == ids[::-1]
    assert listed["first_id"] == ids[2] and listed["last_id"] == ids[0]

    first = client.get("/v1/files", headers=alice, params={"limit": 2, "order": "asc"}).json()
    assert [f["id"] for f in first["data"]] == ids[:2] and first["has_more"] is True
    rest = client.get("/v1/files", headers=alice, params={"limit": 2, "order": "asc", "after": ids[1]}).json()
    assert [f["id"] for f in rest["data"]] == ids[2:] and rest["has_more"] is False

    assert client.get("/v1/files", headers=alice, params={"purpose": "batch_output"}).json()["data"] == []


BAD_UPLOADS = {
    "malformed_json_line": (jsonl(chat_line("a")) + b"{not json\n", "invalid_json_line", "line 2"),
    "not_an_object": (b"[1, 2]\n", "invalid_json_line", "line 1"),
    "invalid_utf8": (
        jsonl(chat_line("a")) + b'{"custom_id": "\xff\xfe"}\n',
        "invalid_file_encoding",
        "line 2",
    ),
    "bom": (b"\xef\xbb\xbf" + GOOD, "invalid_file_format", "byte order mark"),
    "empty": (b"", "empty_file", "empty"),
    "blank_lines_only": (b"\n  \n", "empty_file", "empty"),
}


@pytest.mark.parametrize("name", BAD_UPLOADS)
def test_bad_uploads_are_rejected_whole(
    client: TestClient, alice: Headers, settings: Settings, name: str
) -> None:
    content, code, message_part = BAD_UPLOADS[name]
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    error = assert_openai_error(response, 400, code=code, param="file")
    assert message_part in error["message"]
    assert _stored_files(settings) == [] and _file_rows(settings) == 0


def test_json_nested_10000_deep_is_a_400_not_a_crash(settings: Settings, alice: Headers) -> None:
    roomy = settings.model_copy(update={"max_file_bytes": 100_000})
    deep_line = b'{"custom_id": "a", "body": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n"
    with TestClient(create_app(roomy, enqueue=lambda batch_id: None)) as roomy_client:
        response = roomy_client.post(
            "/v1/files", headers=alice, files={"file": ("in.jsonl", deep_line)}, data={"purpose": "batch"}
        )
    error = assert_openai_error(response, 400, code="invalid_json_line", param="file")
    assert "levels deep. (line 1)" in error["message"]
    assert _stored_files(settings) == [] and _file_rows(settings) == 0


def test_oversize_upload_is_413_and_leaves_nothing(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    big = jsonl(*(chat_line(f"id-{i}", "x" * 100) for i in range(40)))
    assert len(big) > settings.max_file_bytes
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("big.jsonl", big)}, data={"purpose": "batch"}
    )
    assert_openai_error(response, 413, code="file_too_large")
    assert _stored_files(settings) == [] and _file_rows(settings) == 0


def test_request_body_far_over_the_limit_is_413(client: TestClient, alice: Headers) -> None:
    huge = b"x" * (3 * 1024 * 1024)
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("h.jsonl", huge)}, data={"purpose": "batch"}
    )
    assert_openai_error(response, 413)


@pytest.mark.parametrize("purpose", ["fine-tune", "batch_output", "assistants"])
def test_wrong_purpose_is_rejected(
    client: TestClient, alice: Headers, settings: Settings, purpose: str
) -> None:
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("in.jsonl", GOOD)}, data={"purpose": purpose}
    )
    assert_openai_error(response, 400, code="invalid_value", param="purpose")
    assert _stored_files(settings) == [] and _file_rows(settings) == 0


def test_missing_fields_are_reported(client: TestClient, alice: Headers) -> None:
    no_purpose = client.post("/v1/files", headers=alice, files={"file": ("in.jsonl", GOOD)})
    assert_openai_error(no_purpose, 400, code="missing_required_parameter", param="purpose")
    no_file = client.post("/v1/files", headers=alice, data={"purpose": "batch"})
    assert_openai_error(no_file, 400, code="missing_required_parameter", param="file")


def test_unknown_file_is_404(client: TestClient, alice: Headers) -> None:
    for method, path in [
        ("GET", "/v1/files/file-nope"),
        ("GET", "/v1/files/file-nope/content"),
        ("DELETE", "/v1/files/file-nope"),
    ]:
        assert_openai_error(client.request(method, path, headers=alice), 404, param="id")


def test_input_of_unfinished_batch_cannot_be_deleted(client: TestClient, alice: Headers) -> None:
    file_id = upload(client, alice, GOOD)["id"]
    create_batch(client, alice, file_id)
    assert_openai_error(client.delete(f"/v1/files/{file_id}", headers=alice), 409, code="file_in_use")
    assert client.get(f"/v1/files/{file_id}", headers=alice).status_code == 200


def test_multibyte_upload_round_trips(client: TestClient, alice: Headers) -> None:
    # Chunk-boundary handling is covered in tests/hybatch/test_jsonl.py with tiny chunks.
    lines = [chat_line(f"ü-{i}", "héllo ✓ " * 3) for i in range(8)]
    content = jsonl(*lines)
    created = upload(client, alice, content)
    assert client.get(f"/v1/files/{created['id']}/content", headers=alice).content == content


def test_streamed_body_over_the_limit_is_cut_off(client: TestClient, alice: Headers) -> None:
    # No Content-Length (chunked upload): the limit applies while the body is read.
    def body():
        yield b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        for _ in range(40):
            yield b"y" * 100_000
        yield b"\r\n--x--\r\n"

    response = client.post(
        "/v1/files", headers={**alice, "Content-Type": "multipart/form-data; boundary=x"}, content=body()
    )
    assert_openai_error(response, 413)

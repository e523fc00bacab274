"""The Files API on S3 storage: uploads and downloads over HTTP land in (and come from) the bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.settings import Settings
from hybatch.storage_s3 import S3FileStorage
from tests.api.helpers import SERVED_MODEL, Headers, assert_openai_error, chat_line, jsonl, upload
from tests.hybatch.s3_server import new_s3_storage, running_s3_server, stored_keys

MiB = 1024 * 1024
LINE = jsonl(chat_line("x", content="w" * 1000))  # about 1.1 kB


def _batch_file(num_bytes: int) -> bytes:
    return b"".join(
        jsonl(chat_line(f"req-{i}", content="w" * 1000)) for i in range(num_bytes // len(LINE) + 1)
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with running_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var", database_url=database_url, model_name=SERVED_MODEL, max_file_bytes=12 * MiB
    )


@pytest.fixture
def s3_storage(s3_endpoint: str) -> S3FileStorage:
    return new_s3_storage(s3_endpoint)


@pytest.fixture
def client(settings: Settings, enqueued: list[str], s3_storage: S3FileStorage) -> Iterator[TestClient]:
    app = create_app(settings, enqueue=enqueued.append, storage=s3_storage)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def test_upload_download_delete_through_the_bucket(
    client: TestClient, alice: Headers, settings: Settings, s3_storage: S3FileStorage
) -> None:
    content = _batch_file(9 * MiB)  # two parts of a multipart upload
    created = upload(client, alice, content)
    assert created["bytes"] == len(content)
    assert stored_keys(s3_storage) == [f"files/{created['id']}"]
    assert not settings.files_dir.exists() or list(settings.files_dir.iterdir()) == []

    downloaded = client.get(f"/v1/files/{created['id']}/content", headers=alice)
    assert downloaded.status_code == 200 and downloaded.content == content

    assert client.delete(f"/v1/files/{created['id']}", headers=alice).json()["deleted"] is True
    assert stored_keys(s3_storage) == []


def test_oversize_upload_leaves_nothing_in_the_bucket(
    client: TestClient, alice: Headers, s3_storage: S3FileStorage
) -> None:
    content = _batch_file(12 * MiB + MiB // 2)  # past the limit, within the request body allowance
    response = client.post(
        "/v1/files", headers=alice, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    assert_openai_error(response, 413, code="file_too_large")
    assert stored_keys(s3_storage) == []
    assert client.get("/v1/files", headers=alice).json()["data"] == []

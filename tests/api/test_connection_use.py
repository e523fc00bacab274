"""No pooled database connection is held while an upload is written to storage or a download streams.

The app gets a pool of one connection and no overflow: while one request is stopped half-way
through storing an upload (or streaming a download), another request must still get a connection.
Before the sessions were scoped to one thread call, the stopped request held the only one and the
second waited out the pool timeout (a 500).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.settings import Settings
from hybatch.storage import LocalFileStorage
from tests.api.helpers import Headers, chat_line, jsonl, upload

HOLD_TIMEOUT_S = 30  # a bound for a broken test only; a passing one is released at once
GOOD_LINES = jsonl(chat_line("a"), chat_line("b"))


class HeldStorage(LocalFileStorage):
    """Local storage whose writes and reads stop half-way until ``release`` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.holding = threading.Event()
        self.release = threading.Event()
        self.hold_reads = False

    def _hold(self) -> None:
        self.holding.set()
        assert self.release.wait(HOLD_TIMEOUT_S), "the test never released the held request"

    @contextmanager
    def open_write(self, file_id: str) -> Iterator[BinaryIO]:
        with super().open_write(file_id) as writer:
            self._hold()
            yield writer

    def open_read(self, file_id: str) -> BinaryIO:
        reader = super().open_read(file_id)
        if not self.hold_reads:
            return reader
        storage = self

        class HeldReader:
            def read(self, size: int = -1) -> bytes:
                storage._hold()
                return reader.read(size)

            def __enter__(self):
                return self

            def __exit__(self, *exc_info) -> None:
                reader.close()

        return HeldReader()  # type: ignore[return-value]


@pytest.fixture
def held_storage(tmp_path: Path) -> HeldStorage:
    return HeldStorage(tmp_path / "held-files")


@pytest.fixture
def one_connection_client(settings: Settings, held_storage: HeldStorage) -> Iterator[TestClient]:
    tight = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_s": 2.0})
    app = create_app(tight, enqueue=lambda batch_id: None, storage=held_storage)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def _while_held(storage: HeldStorage, held_request, other_request):
    """Run ``held_request`` until it stops in storage, then ``other_request``; release; both results."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(held_request)
        try:
            assert storage.holding.wait(HOLD_TIMEOUT_S), "the held request never reached the storage"
            other = other_request()
        finally:
            storage.release.set()
        return held.result(timeout=HOLD_TIMEOUT_S), other


def test_a_get_is_served_while_an_upload_is_still_being_stored(
    one_connection_client: TestClient, held_storage: HeldStorage, alice: Headers
) -> None:
    client = one_connection_client
    uploaded, listed = _while_held(
        held_storage,
        lambda: client.post(
            "/v1/files", headers=alice, files={"file": ("in.jsonl", GOOD_LINES)}, data={"purpose": "batch"}
        ),
        lambda: client.get("/v1/files", headers=alice),
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []  # the upload's row comes only after its bytes are stored
    assert uploaded.status_code == 200, uploaded.text
    assert [row["id"] for row in client.get("/v1/files", headers=alice).json()["data"]] == [
        uploaded.json()["id"]
    ]


def test_a_get_is_served_while_a_download_is_still_streaming(
    one_connection_client: TestClient, held_storage: HeldStorage, alice: Headers
) -> None:
    client = one_connection_client
    held_storage.release.set()  # the upload itself goes straight through
    file_id = upload(client, alice, GOOD_LINES)["id"]
    held_storage.release.clear()
    held_storage.holding.clear()
    held_storage.hold_reads = True
    downloaded, retrieved = _while_held(
        held_storage,
        lambda: client.get(f"/v1/files/{file_id}/content", headers=alice),
        lambda: client.get(f"/v1/files/{file_id}", headers=alice),
    )
    assert retrieved.status_code == 200, retrieved.text
    assert downloaded.status_code == 200 and downloaded.content == GOOD_LINES

"""File expiry as OpenAI's: ``expires_after`` on uploads, ``output_expires_after`` on batches, 404 once
expired, and the sweep that deletes expired files."""

from __future__ import annotations

from datetime import timedelta

import openai
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hybatch import files
from hybatch.batch_results import write_result_files
from hybatch.db import make_engine, make_session_factory
from hybatch.models import Batch, BatchStatus, File, utc_now
from hybatch.result_lines import error_line
from hybatch.settings import Settings
from hybatch.storage import LocalFileStorage
from tests.api.helpers import Headers, assert_openai_error, chat_line, create_batch, jsonl, upload
from tests.api.test_openai_sdk import base_url, sdk  # noqa: F401 (fixtures)

DAY_S = 24 * 3600


def _sessions(settings: Settings):
    return make_session_factory(make_engine(settings.database_url))


def _expire(settings: Settings, file_id: str) -> None:
    with _sessions(settings)() as session:
        session.execute(
            sa.update(File).where(File.id == file_id).values(expires_at=utc_now() - timedelta(seconds=1))
        )
        session.commit()


def test_the_sdk_sets_an_expiry_and_batch_files_default_to_30_days(sdk: openai.OpenAI) -> None:  # noqa: F811
    content = jsonl(chat_line("a"))
    chosen = sdk.files.create(
        file=("in.jsonl", content), purpose="batch", expires_after={"anchor": "created_at", "seconds": 7200}
    )
    assert chosen.expires_at == chosen.created_at + 7200
    default = sdk.files.create(file=("in.jsonl", content), purpose="batch")
    assert default.expires_at == default.created_at + 30 * DAY_S
    assert sdk.files.retrieve(chosen.id).expires_at == chosen.expires_at


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "7200"},
            "expires_after.anchor",
        ),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "expires_after.seconds"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
            "expires_after.seconds",
        ),
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
    ],
)
def test_an_expiry_out_of_bounds_is_a_clear_400(
    client: TestClient, alice: Headers, fields: dict, param: str
) -> None:
    response = client.post(
        "/v1/files",
        headers=alice,
        files={"file": ("in.jsonl", jsonl(chat_line("a")))},
        data={"purpose": "batch", **fields},
    )
    assert_openai_error(response, 400, code="invalid_value", param=param)
    assert client.get("/v1/files", headers=alice).json()["data"] == []  # nothing was stored


def test_an_expired_file_answers_404_like_a_deleted_one(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    file_id = upload(client, alice, jsonl(chat_line("a")))["id"]
    _expire(settings, file_id)
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        assert_openai_error(client.get(path, headers=alice), 404)
    assert client.get("/v1/files", headers=alice).json()["data"] == []
    assert_openai_error(
        client.post(
            "/v1/batches",
            headers=alice,
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ),
        404,
    )


def test_a_batch_output_expires_after_what_it_asked(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    file_id = upload(client, alice, jsonl(chat_line("a")))["id"]
    batch_id = create_batch(
        client, alice, file_id, output_expires_after={"anchor": "created_at", "seconds": 3600}
    )["id"]
    assert_openai_error(
        client.post(
            "/v1/batches",
            headers=alice,
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "output_expires_after": {"anchor": "created_at", "seconds": 60},
            },
        ),
        400,
        code="invalid_value",
        param="output_expires_after.seconds",
    )
    storage = LocalFileStorage(settings.files_dir)
    with _sessions(settings)() as session:  # the worker's result files, as it writes them
        batch = session.get(Batch, batch_id)
        from hybatch.batch_results import record_failure

        record_failure(
            session, batch, custom_id="a", line_number=1, line=error_line("a", code="x", message="y")
        )
        written = write_result_files(session, storage, batch)
        session.commit()
        error_file = session.get(File, written.error_file_id)
        assert error_file.expires_at == error_file.created_at + timedelta(seconds=3600)
    body = client.get(f"/v1/files/{written.error_file_id}", headers=alice).json()
    assert body["expires_at"] == body["created_at"] + 3600


def test_the_sweep_deletes_expired_files_but_not_the_input_of_an_unfinished_batch(
    client: TestClient, alice: Headers, settings: Settings
) -> None:
    storage = LocalFileStorage(settings.files_dir)
    idle = upload(client, alice, jsonl(chat_line("a")))["id"]
    busy = upload(client, alice, jsonl(chat_line("b")))["id"]
    fresh = upload(client, alice, jsonl(chat_line("c")))["id"]
    batch_id = create_batch(client, alice, busy)["id"]  # validating: it may still read its input
    for file_id in (idle, busy):
        _expire(settings, file_id)
    sessions = _sessions(settings)

    with sessions() as session:
        assert files.delete_expired_files(session, storage) == 1
    assert not (settings.files_dir / idle).exists()
    assert (settings.files_dir / busy).exists() and (settings.files_dir / fresh).exists()
    with sessions() as session:
        assert session.get(File, idle).deleted_at is not None
        assert files.delete_expired_files(session, storage) == 0  # idle is done; busy still in use
        session.execute(sa.update(Batch).where(Batch.id == batch_id).values(status=BatchStatus.COMPLETED))
        session.commit()
        assert files.delete_expired_files(session, storage) == 1  # the batch ended: its input goes
    assert not (settings.files_dir / busy).exists()
    assert client.get(f"/v1/files/{fresh}", headers=alice).status_code == 200

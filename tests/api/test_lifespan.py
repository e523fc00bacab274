"""The API process's start-up and upkeep: its thread pool size, the sweep of abandoned uploads."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.settings import Settings
from hybatch.storage import PARTIAL_SUFFIX, LocalFileStorage

STALE_S = 7200


@pytest.fixture
def sweep_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=sqlite_url, partial_max_age_s=3600)


def _partial(settings: Settings, name: str, age_s: float = 0) -> Path:
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    path = settings.files_dir / f".{name}.4242{PARTIAL_SUFFIX}"
    path.write_bytes(b'{"custom_id": "half')
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_start_up_removes_stale_partial_uploads_and_keeps_fresh_ones(sweep_settings: Settings) -> None:
    stale = _partial(sweep_settings, "file-stale", age_s=STALE_S)
    fresh = _partial(sweep_settings, "file-fresh")
    with TestClient(create_app(sweep_settings, enqueue=lambda batch_id: None)):
        assert not stale.exists()
        assert fresh.exists()


def test_a_periodic_sweep_removes_uploads_abandoned_after_start_up(sweep_settings: Settings) -> None:
    often = sweep_settings.model_copy(update={"partial_sweep_interval_s": 0.01})
    with TestClient(create_app(often, enqueue=lambda batch_id: None)):
        stale = _partial(often, "file-later", age_s=STALE_S)
        deadline = time.monotonic() + 30
        while stale.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stale.exists()


class BrokenSweepStorage(LocalFileStorage):
    def sweep_incomplete(self, older_than: timedelta) -> int:
        raise ConnectionError("the store is down")


def test_a_failing_sweep_is_logged_and_the_api_still_starts(
    sweep_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    storage = BrokenSweepStorage(sweep_settings.files_dir)
    with TestClient(create_app(sweep_settings, enqueue=lambda batch_id: None, storage=storage)) as client:
        assert client.get("/healthz").status_code == 200
    assert "sweeping unfinished uploads failed" in caplog.text


def test_the_thread_pool_has_the_configured_size(sweep_settings: Settings) -> None:
    narrow = sweep_settings.model_copy(update={"api_threads": 7})
    with TestClient(create_app(narrow, enqueue=lambda batch_id: None)) as client:
        assert client.portal.call(_thread_tokens) == 7


async def _thread_tokens() -> float:
    return anyio.to_thread.current_default_thread_limiter().total_tokens


def test_a_running_api_deletes_files_once_they_expire(sweep_settings: Settings) -> None:
    import sqlalchemy as sa

    from hybatch import accounts
    from hybatch.db import make_engine, make_session_factory
    from hybatch.models import File, utc_now

    often = sweep_settings.model_copy(update={"expired_files_sweep_interval_s": 0.01})
    app = create_app(often, enqueue=lambda batch_id: None)
    sessions = make_session_factory(make_engine(often.database_url))
    with sessions() as session:
        account = accounts.create_account(session, "acme")
        secret = accounts.create_api_key(session, account.id).secret
        session.commit()
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        body = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
        file_id = client.post(
            "/v1/files", headers=headers, files={"file": ("in.jsonl", body)}, data={"purpose": "batch"}
        ).json()["id"]
        stored = often.files_dir / file_id
        assert stored.exists()
        with sessions() as session:
            session.execute(sa.update(File).where(File.id == file_id).values(expires_at=utc_now()))
            session.commit()
        deadline = time.monotonic() + 30
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stored.exists()
        with sessions() as session:
            assert session.get(File, file_id).deleted_at is not None

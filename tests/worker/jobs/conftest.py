"""Fixtures for the batch job: a runnable tiny checkpoint, one shared engine, a migrated SQLite db."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hybatch.db import make_engine, make_session_factory
from hybatch.settings import Settings
from hybatch.storage import LocalFileStorage
from tests.worker.jobs.service_checkpoint import build_service_checkpoint
from worker.jobs import JobContext

SERVED_MODEL = "tiny-test"


@pytest.fixture(scope="session")
def service_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_service_checkpoint(tmp_path_factory.mktemp("service-ckpt") / SERVED_MODEL)


@pytest.fixture(scope="session")
def llm(service_checkpoint: Path):
    """One engine for every job test (accounts differ per test, so their cache entries never meet)."""
    from worker.engine import LLM

    return LLM(service_checkpoint, device="cpu", enable_prefix_caching=True, kv_cache_gb=0.02)


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, service_checkpoint: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=sqlite_url,
        model=service_checkpoint,
        model_name=SERVED_MODEL,
        device="cpu",
    )


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def context(settings: Settings, session_factory: sessionmaker[Session], llm) -> JobContext:
    return JobContext(
        settings=settings,
        session_factory=session_factory,
        storage=LocalFileStorage(settings.files_dir),
        load_llm=lambda: llm,
        status_poll_interval_s=0.0,
    )

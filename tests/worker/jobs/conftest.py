"""Fixtures for the batch job: a runnable tiny checkpoint, one shared engine, a migrated database
(every job test runs on SQLite and on Postgres)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from hybatch.db import make_engine, make_session_factory
from hybatch.leases import Lease, new_lease_owner
from hybatch.settings import Settings, get_settings
from hybatch.storage import LocalFileStorage
from tests.worker.jobs.service_checkpoint import shared_service_checkpoint
from tests.worker.jobs.task_queue import QueuedTasks
from worker.jobs import JobContext

SERVED_MODEL = "tiny-test"


@pytest.fixture(scope="session")
def service_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_service_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def llm(service_checkpoint: Path):
    """One engine for every job test (accounts differ per test, so their cache entries never meet)."""
    from worker.engine import LLM

    return LLM(service_checkpoint, device="cpu", enable_prefix_caching=True, kv_cache_gb=0.02)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Decode steps of a tiny model are ~10x slower when 2 threads contend for 2 shared cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, service_checkpoint: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
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
        lease=Lease(owner=new_lease_owner(), duration=timedelta(seconds=30)),
        send=QueuedTasks(),
        status_poll_interval_s=0.0,
    )


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: JobContext):
    """``worker.tasks`` with its process-wide context replaced by the test's.

    Imported here, not at a module top: the module-level Celery app reads the settings (and makes
    the data dir) on first import, which must not be ./var.
    """
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "import-var"))
    get_settings.cache_clear()
    module = importlib.import_module("worker.tasks")
    get_settings.cache_clear()
    monkeypatch.setattr(module, "worker_context", lambda: context)
    return module

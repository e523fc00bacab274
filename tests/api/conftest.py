"""API fixtures: an app on a migrated database (SQLite and Postgres), a captured enqueuer, keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.settings import Settings
from tests.api.helpers import SERVED_MODEL, Headers, bearer


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        model_name=SERVED_MODEL,
        max_file_bytes=4096,
        completion_windows=("24h", "1h"),
    )


@pytest.fixture
def enqueued() -> list[str]:
    """Batch ids the app enqueued, in order (the test enqueuer only records them)."""
    return []


@pytest.fixture
def client(settings: Settings, enqueued: list[str]) -> Iterator[TestClient]:
    app = create_app(settings, enqueue=enqueued.append)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def new_key(settings: Settings) -> Iterator[Callable[[str], str]]:
    """``new_key(account_name)`` creates the account if needed and returns a fresh secret."""
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)

    def make(account_name: str) -> str:
        with unit_of_work(session_factory) as session:
            account = accounts.find_account(session, account_name) or accounts.create_account(
                session, account_name
            )
            return accounts.create_api_key(session, account.id).secret

    yield make
    engine.dispose()


@pytest.fixture
def alice(new_key: Callable[[str], str]) -> Headers:
    return bearer(new_key("alice"))


@pytest.fixture
def bob(new_key: Callable[[str], str]) -> Headers:
    return bearer(new_key("bob"))

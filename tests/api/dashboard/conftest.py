"""Dashboard fixtures: an app with an admin key on a seeded world, and a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.models import ApiKey, utc_now
from hybatch.settings import Settings
from hybatch.storage import LocalFileStorage
from tests.api.dashboard.batch_states import BatchStates, add_batch_states
from tests.api.dashboard.world import ADMIN_KEY, World, build_world
from tests.api.helpers import SERVED_MODEL


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        model_name=SERVED_MODEL,
        admin_key=ADMIN_KEY,
    )


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    engine = make_engine(settings.database_url)
    yield build_world(make_session_factory(engine), LocalFileStorage(settings.files_dir), utc_now())
    engine.dispose()


@pytest.fixture
def states(settings: Settings, world: World) -> BatchStates:
    """Alice's batches in every end state (``batch_states``), beside the world's."""
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        key_id = session.scalar(sa.select(ApiKey.id).where(ApiKey.account_id == world.alice_account_id))
        made = add_batch_states(
            session,
            LocalFileStorage(settings.files_dir),
            world.alice_account_id,
            key_id,
            "tiny-test",
            utc_now(),
        )
    engine.dispose()
    return made


@pytest.fixture
def browser_client(settings: Settings, enqueued: list[str]) -> Iterator[TestClient]:
    """A client that keeps cookies and does not follow redirects (to check them)."""
    app = create_app(settings, enqueue=enqueued.append)
    with TestClient(app, follow_redirects=False, base_url="http://testserver") as client:
        yield client
    app.state.engine.dispose()


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, "the page has no CSRF token"
    return match.group(1)


@pytest.fixture
def sign_in(browser_client: TestClient) -> Callable[[str], TestClient]:
    """``sign_in(secret)`` signs the client in with an API (or admin) key and returns it."""

    def do(secret: str) -> TestClient:
        token = form_token(browser_client.get("/dashboard/login").text)
        response = browser_client.post("/dashboard/login", data={"api_key": secret, "csrf_token": token})
        assert response.status_code == 303, response.text
        return browser_client

    return do

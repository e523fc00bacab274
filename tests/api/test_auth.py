"""Bearer auth: missing, malformed, unknown and revoked keys all get an OpenAI-shaped 401."""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.settings import Settings
from tests.api.helpers import assert_openai_error, bearer

PROTECTED = [
    ("GET", "/v1/files"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files/file-x"),
    ("GET", "/v1/files/file-x/content"),
    ("DELETE", "/v1/files/file-x"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/batch_x"),
    ("POST", "/v1/batches/batch_x/cancel"),
    ("GET", "/v1/models"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_key_is_401(client: TestClient, method: str, path: str) -> None:
    assert_openai_error(client.request(method, path), 401)


@pytest.mark.parametrize("header", ["Bearer", "Bearer   ", "Basic abc", "hb-no-scheme", "Bearer hb-unknown"])
def test_malformed_or_unknown_key_is_401(client: TestClient, header: str) -> None:
    assert_openai_error(client.get("/v1/files", headers={"Authorization": header}), 401)


def test_revoked_key_is_401(client: TestClient, settings: Settings, new_key: Callable[[str], str]) -> None:
    secret = new_key("carol")
    assert client.get("/v1/files", headers=bearer(secret)).status_code == 200
    with unit_of_work(make_session_factory(make_engine(settings.database_url))) as session:
        accounts.revoke_api_key(session, secret[: accounts.VISIBLE_PREFIX_CHARS])
    error = assert_openai_error(client.get("/v1/files", headers=bearer(secret)), 401, code="invalid_api_key")
    assert secret not in error["message"]


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_unknown_route_is_openai_shaped(client: TestClient) -> None:
    assert_openai_error(client.get("/v1/nothing-here"), 404)

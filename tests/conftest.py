"""Shared fixtures: service URLs for Postgres and Redis.

Tests that need a server are marked ``postgres`` or ``redis``. They skip when the server
cannot be reached, unless ``HYBATCH_REQUIRE_SERVICES=1`` (set by ``.ci/run``), in which
case an unreachable server fails them.
"""

from __future__ import annotations

import os

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _services_required() -> bool:
    return os.environ.get("HYBATCH_REQUIRE_SERVICES") == "1"


def _unreachable(what: str, url: str, error: Exception) -> None:
    message = f"{what} unreachable at {url}: {error}"
    if _services_required():
        pytest.fail(message + " (HYBATCH_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """SQLAlchemy URL of a reachable Postgres database (skips or fails when unreachable)."""
    import sqlalchemy as sa

    url = os.environ.get("HYBATCH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("select 1"))
    except Exception as error:  # any driver or network error means "not here"
        _unreachable("postgres", url, error)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis server (skips or fails when unreachable)."""
    import redis

    url = os.environ.get("HYBATCH_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as error:
        _unreachable("redis", url, error)
    finally:
        client.close()
    return url

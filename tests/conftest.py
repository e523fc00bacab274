"""Shared fixtures: service URLs for Postgres and Redis, a clean environment, a pinnable clock.

Tests that need a server are marked ``postgres`` or ``redis``. They skip when the server
cannot be reached, unless ``HYBATCH_REQUIRE_SERVICES=1`` (set by ``.ci/run``), in which
case an unreachable server fails them.

Every test starts without the developer's own ``HYBATCH_*`` settings (an exported ``HYBATCH_PORT``
must not change what a test sees, nor reach a process a test starts); only the test harness's
variables below stay.

``--clock=2027-03-01T00:20:00Z`` (or ``HYBATCH_TEST_CLOCK``) runs every test with the clock pinned
there by time-machine, ticking on from the pin: ``datetime.now``, ``time.time`` and everything built
on them (``hybatch.models.utc_now``, SQLAlchemy's ``default=utc_now``), in threads too, but not
``time.monotonic``, the database server's clock (no column takes a server-side default) or another
process. Tests whose data or answers depend on the date are marked ``dated``; ``make test-clocks``
runs them pinned at the first hour of a month, the last hour of a month and on 29 February.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from hybatch.storage import LocalFileStorage

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The test harness's own HYBATCH_* variables; every other one is a service setting and is cleared.
HARNESS_VARIABLES = frozenset(
    {
        "HYBATCH_TEST_POSTGRES_URL",
        "HYBATCH_TEST_REDIS_URL",
        "HYBATCH_REQUIRE_SERVICES",
        "HYBATCH_TEST_CLOCK",
        "HYBATCH_TEST_ARTIFACTS",
    }
)
_CLOCK_PIN = pytest.StashKey["datetime | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock",
        metavar="ISO8601",
        default=os.environ.get("HYBATCH_TEST_CLOCK") or None,
        help="run every test with the clock pinned at this moment with a UTC offset, ticking on from "
        "there (e.g. 2027-03-01T00:20:00Z); default $HYBATCH_TEST_CLOCK",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CLOCK_PIN] = _clock_pin(config.getoption("clock"))
    # From here on, so that modules imported while collecting (worker.celery_app reads the settings)
    # and session fixtures (a shared checkpoint, a migrated schema) do not see them either.
    environment = pytest.MonkeyPatch()
    _clear_service_settings(environment)
    config.add_cleanup(environment.undo)


def _clock_pin(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        pin = datetime.fromisoformat(text)
    except ValueError as error:
        raise pytest.UsageError(f"--clock {text!r} is not an ISO 8601 date-time") from error
    if pin.tzinfo is None:
        raise pytest.UsageError(f"--clock {text!r} needs a UTC offset, e.g. {text}Z")
    return pin


def pytest_report_header(config: pytest.Config) -> str | None:
    pin = config.stash[_CLOCK_PIN]
    return f"clock: pinned at {pin.isoformat()}, ticking" if pin else None


@pytest.fixture(autouse=True)
def pinned_clock(request: pytest.FixtureRequest) -> Iterator[datetime | None]:
    """The moment ``--clock`` pins this test's clock at (from before its function-scoped fixtures
    run), or None on the real clock. Session- and module-scoped fixtures run on the real clock."""
    pin = request.config.stash[_CLOCK_PIN]
    if pin is None:
        yield None
        return
    import time_machine

    with time_machine.travel(pin, tick=True):
        yield pin


def _clear_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HYBATCH_") and name not in HARNESS_VARIABLES:
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def no_service_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clears every ``HYBATCH_*`` setting but the harness's, also any an earlier test left behind;
    a test sets what it needs with ``monkeypatch.setenv``, and subprocesses inherit the result."""
    _clear_service_settings(monkeypatch)


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


def _with_search_path(server_url: str, schema: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def _fresh_schema(server_url: str) -> Iterator[str]:
    """A new uniquely named schema, dropped on exit, so concurrent and repeated runs never collide."""
    import sqlalchemy as sa

    schema = f"hybatch_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(server_url, schema)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def empty_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a fresh, empty Postgres schema (dropped afterwards)."""
    with _fresh_schema(postgres_server_url) as url:
        yield url


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hybatch.db'}"


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hybatch.migrate import upgrade_to_head

    path = tmp_path_factory.mktemp("sqlite-template") / "hybatch.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _migrated_sqlite_template: Path) -> str:
    """A SQLite database in the test's tmp dir, migrated to head with Alembic (copied from a template)."""
    path = tmp_path / "hybatch.db"
    shutil.copyfile(_migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def _migrated_postgres_schema(postgres_server_url: str) -> Iterator[str]:
    from hybatch.migrate import upgrade_to_head

    with _fresh_schema(postgres_server_url) as url:
        upgrade_to_head(url)
        yield url


@pytest.fixture
def postgres_url(_migrated_postgres_schema: str) -> str:
    """A Postgres schema migrated to head with Alembic; every table is emptied before each test."""
    import sqlalchemy as sa

    engine = sa.create_engine(_migrated_postgres_schema)
    try:
        with engine.begin() as connection:
            tables = [name for name in sa.inspect(connection).get_table_names() if name != "alembic_version"]
            if tables:
                connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return _migrated_postgres_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database; tests using this run once on SQLite and once on Postgres."""
    fixture_name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture_name)


@pytest.fixture
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    from hybatch.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def storage(tmp_path: Path) -> LocalFileStorage:
    from hybatch.storage import LocalFileStorage

    return LocalFileStorage(tmp_path / "files")


class _WebhookReceiver(BaseHTTPRequestHandler):
    """Records each POST as (lower-cased headers, body); answers the statuses queued in
    ``server.statuses``, then 200."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_receiver() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on a loopback port that records the webhooks sent to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookReceiver)
    server.received, server.statuses = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()

"""Database engine and sessions (SQLite in embedded mode, Postgres when distributed).

SQLite connections get WAL journaling (the API and the worker processes share the file),
enforced foreign keys and a busy timeout, so concurrent writers wait instead of failing.

Pooled connections: ``PoolSizes`` says how many (SQLAlchemy's defaults unless the settings say
otherwise, see ``engine_from_settings``). A file-backed SQLite database is pooled like Postgres
(opening one is cheap, but each runs the pragmas); an in-memory one keeps SQLAlchemy's own pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from hybatch.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class PoolSizes:
    """Connections an engine keeps (``size``), may open beyond that (``max_overflow``), and how long
    a checkout waits for one before it fails (``timeout_s``)."""

    size: int = 5
    max_overflow: int = 10
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolSizes:
        return cls(settings.db_pool_size, settings.db_max_overflow, settings.db_pool_timeout_s)

    def engine_arguments(self) -> dict[str, int | float]:
        return {"pool_size": self.size, "max_overflow": self.max_overflow, "pool_timeout": self.timeout_s}


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str, pool: PoolSizes | None = None) -> Engine:
    """Create an engine for ``database_url``; for SQLite, also create the file's directory."""
    url = make_url(database_url)
    pool_arguments = (pool or PoolSizes()).engine_arguments()
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, **pool_arguments)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    else:
        pool_arguments = {}  # one connection per thread (SingletonThreadPool) takes no sizes
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **pool_arguments,
    )
    sa.event.listen(engine, "connect", _configure_sqlite_connection)
    return engine


def engine_from_settings(settings: Settings) -> Engine:
    """The engine for ``HYBATCH_DATABASE_URL`` with the pool the ``HYBATCH_DB_POOL_*`` settings size."""
    return make_engine(settings.database_url, PoolSizes.from_settings(settings))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (routes render rows after committing)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception, always close."""
    session = session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

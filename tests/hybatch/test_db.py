import pytest
import sqlalchemy as sa

from hybatch.db import PoolSizes, engine_from_settings, make_engine
from hybatch.settings import Settings


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()
    assert (tmp_path / "nested" / "x.db").exists()


def test_pool_sizes_come_from_the_settings(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, db_pool_size=3, db_max_overflow=2, db_pool_timeout_s=1.5)
    engine = engine_from_settings(settings)
    try:
        assert (engine.pool.size(), engine.pool._max_overflow, engine.pool._timeout) == (3, 2, 1.5)
    finally:
        engine.dispose()


def test_a_pool_without_overflow_refuses_a_second_connection_after_its_timeout(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}", PoolSizes(size=1, max_overflow=0, timeout_s=0.05))
    try:
        with engine.connect(), pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        engine.dispose()


def test_in_memory_sqlite_keeps_its_own_pool() -> None:
    engine = make_engine("sqlite://", PoolSizes(size=1, max_overflow=0))
    with engine.connect() as connection:
        assert connection.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()

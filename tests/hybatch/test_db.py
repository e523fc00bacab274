import sqlalchemy as sa

from hybatch.db import make_engine


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'x.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.execute(sa.text("select 1")).scalar() == 1
    engine.dispose()
    assert (tmp_path / "nested" / "x.db").exists()

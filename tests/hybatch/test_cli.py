import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hybatch import accounts, cli
from hybatch.db import make_engine, make_session_factory

runner = CliRunner()


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    result = runner.invoke(cli.app, ["migrate"])
    assert result.exit_code == 0, result.output
    return f"sqlite:///{tmp_path / 'var' / 'hybatch.db'}"


def _session(database_url: str) -> Session:
    return make_session_factory(make_engine(database_url))()


def test_accounts_and_keys_life_cycle(database_url: str) -> None:
    assert runner.invoke(cli.app, ["accounts", "create", "acme"]).exit_code == 0
    duplicate = runner.invoke(cli.app, ["accounts", "create", "acme"])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output

    created = runner.invoke(cli.app, ["keys", "create", "--account", "acme"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip()
    assert secret.startswith("hb-") and len(secret) > 40

    listed = runner.invoke(cli.app, ["keys", "list", "--account", "acme"])
    prefix = secret[: accounts.VISIBLE_PREFIX_CHARS]
    assert prefix in listed.output and secret not in listed.output and "active" in listed.output

    with _session(database_url) as session:
        assert accounts.authenticate(session, secret) is not None

    revoked = runner.invoke(cli.app, ["keys", "revoke", prefix + "..."])
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in runner.invoke(cli.app, ["keys", "list", "--account", "acme"]).output
    with _session(database_url) as session:
        assert accounts.authenticate(session, secret) is None


def test_unknown_account_and_prefix_fail_cleanly(database_url: str) -> None:
    result = runner.invoke(cli.app, ["keys", "create", "--account", "nobody"])
    assert result.exit_code == 1 and "no account named 'nobody'" in result.output
    assert runner.invoke(cli.app, ["keys", "revoke", "hb-nothing"]).exit_code == 1


def test_worker_without_celery_app_explains(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setattr(cli, "CELERY_APP_MODULE", "worker.no_such_module")
    result = runner.invoke(cli.app, ["worker"])
    assert result.exit_code == 1
    assert "no Celery worker" in result.output and "--no-worker" in result.output


def test_up_creates_default_account_once(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    served = []
    monkeypatch.setattr(cli, "_serve_api", lambda settings: served.append(settings.port))

    first = runner.invoke(cli.app, ["up", "--no-worker"])
    assert first.exit_code == 0, first.output
    secret = next(word for word in first.output.split() if word.startswith("hb-"))
    with _session(database_url) as session:
        caller = accounts.authenticate(session, secret)
        assert caller is not None
        assert accounts.get_account(session, "default").id == caller.account_id

    second = runner.invoke(cli.app, ["up", "--no-worker"])
    assert second.exit_code == 0 and "hb-" not in second.output
    assert served == [8000, 8000]


def test_up_without_celery_app_changes_nothing(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setattr(cli, "CELERY_APP_MODULE", "worker.no_such_module")
    result = runner.invoke(cli.app, ["up"])
    assert result.exit_code == 1 and "hb-" not in result.output
    with _session(database_url) as session:
        assert accounts.find_account(session, "default") is None


def test_worker_process_reports_an_unexpected_death() -> None:
    deaths = threading.Event()
    crashing = cli.WorkerProcess([sys.executable, "-c", "raise SystemExit(3)"], on_death=deaths.set)
    assert deaths.wait(timeout=30) and crashing.died.is_set()
    crashing.stop()


def test_worker_process_stopped_on_purpose_is_not_a_death() -> None:
    deaths = threading.Event()
    sleeper = cli.WorkerProcess([sys.executable, "-c", "import time; time.sleep(60)"], on_death=deaths.set)
    sleeper.stop()
    assert not deaths.wait(timeout=0.5) and not sleeper.died.is_set()


def test_sample_account_for_trying_the_dashboard(database_url: str) -> None:
    from hybatch.models import Batch, UsageRecord

    result = runner.invoke(cli.app, ["accounts", "sample", "demo", "--requests", "250", "--days", "3"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1].strip()
    with _session(database_url) as session:
        caller = accounts.authenticate(session, secret)
        assert caller is not None
        records = session.query(UsageRecord).filter_by(account_id=caller.account_id).all()
        assert len(records) == 250
        assert session.query(Batch).filter_by(account_id=caller.account_id).count() == 2  # 200 + 50
    again = runner.invoke(cli.app, ["accounts", "sample", "demo"])
    assert again.exit_code == 1 and "already exists" in again.output  # never into an existing account

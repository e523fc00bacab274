import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hybatch import accounts, cli
from hybatch.db import make_engine, make_session_factory
from hybatch.settings import get_settings

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


class _RecordingCeleryApp:
    """Stands in for the worker's Celery app: records what its tasks would read as their settings."""

    def __init__(self) -> None:
        self.started: list[tuple[list[str], int, bool]] = []

    def worker_main(self, argv: list[str]) -> None:
        settings = get_settings()  # what worker.tasks builds its engine from
        self.started.append((argv, settings.tensor_parallel, settings.expert_parallel))


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, (1, False)),
        ([], {"HYBATCH_TENSOR_PARALLEL": "4", "HYBATCH_EXPERT_PARALLEL": "true"}, (4, True)),
        (["--tensor-parallel", "8"], {"HYBATCH_TENSOR_PARALLEL": "2"}, (8, False)),
        (["--tensor-parallel", "8", "--expert-parallel"], {}, (8, True)),
        (
            ["--no-expert-parallel"],
            {"HYBATCH_TENSOR_PARALLEL": "2", "HYBATCH_EXPERT_PARALLEL": "1"},
            (2, False),
        ),
    ],
)
def test_worker_tensor_parallel_options_override_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], env: dict, expected: tuple
) -> None:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    for name in ("HYBATCH_TENSOR_PARALLEL", "HYBATCH_EXPERT_PARALLEL"):
        monkeypatch.setenv(name, env.get(name, ""))  # so the test's end restores what the command sets
        if name not in env:
            monkeypatch.delenv(name)
    celery_app = _RecordingCeleryApp()
    monkeypatch.setattr(cli, "_load_celery_app", lambda: celery_app)
    result = runner.invoke(cli.app, ["worker", *argv])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    [(celery_argv, tensor_parallel, expert_parallel)] = celery_app.started
    assert (tensor_parallel, expert_parallel) == expected
    assert "--pool=solo" in celery_argv  # still one task at a time: one engine, however many GPUs


def test_worker_refuses_expert_parallel_without_ranks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_TENSOR_PARALLEL", "1")
    monkeypatch.setenv("HYBATCH_EXPERT_PARALLEL", "false")
    celery_app = _RecordingCeleryApp()
    monkeypatch.setattr(cli, "_load_celery_app", lambda: celery_app)
    result = runner.invoke(cli.app, ["worker", "--expert-parallel"])
    get_settings.cache_clear()
    assert result.exit_code == 1 and "HYBATCH_TENSOR_PARALLEL" in result.output
    assert celery_app.started == []
    refused = runner.invoke(cli.app, ["worker", "--tensor-parallel", "0"])
    assert refused.exit_code == 2 and celery_app.started == []  # typer's usage error


def test_up_creates_default_account_once(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    served = []
    monkeypatch.setattr(cli, "_serve_api", lambda settings, **_: served.append(settings.port))

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


def test_a_worker_exiting_once_up_has_its_stop_signal_is_not_a_death() -> None:
    """Ctrl-C reaches ``up`` and its worker at once; the worker may be gone before ``stop`` runs."""
    deaths = threading.Event()
    worker = cli.WorkerProcess([sys.executable, "-c", "import time; time.sleep(0.5)"], on_death=deaths.set)
    worker.expect_exit()  # the API's SIGINT/SIGTERM handler calls this first
    assert not deaths.wait(timeout=5) and not worker.died.is_set()  # it exited on its own meanwhile
    worker.stop()


def test_the_api_reports_its_stop_signal_at_once_and_returns_on_ctrl_c(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from worker.bench.service import free_port

    port = free_port()
    monkeypatch.setenv("HYBATCH_PORT", str(port))
    signalled = []

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    cli._serve_api(
        cli.Settings(), on_stop_signal=lambda: signalled.append(True)
    )  # returns: no KeyboardInterrupt
    assert signalled == [True]


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


def test_bench_help_lists_every_benchmark_on_one_line() -> None:
    result = runner.invoke(cli.app, ["bench", "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    listed = [
        line for line in result.output.splitlines() if any(f" {name} " in line for name in cli.BENCHMARKS)
    ]
    for name, benchmark in cli.BENCHMARKS.items():
        assert any(benchmark.summary in line and f" {name} " in line for line in listed), (
            name,
            result.output,
        )
    assert "unknown benchmark" not in result.output


@pytest.mark.parametrize("name", list(cli.BENCHMARKS))
def test_bench_name_help_is_the_benchmarks_own_with_every_option_explained(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsers: list[argparse.ArgumentParser] = []
    parse_args = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, args=None, namespace=None):
        parsers.append(self)
        return parse_args(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    result = runner.invoke(cli.app, ["bench", name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert f"usage: hybatch bench {name}" in result.output and "(later" not in result.output
    [parser] = parsers
    options = [action for action in parser._actions if action.option_strings]
    unexplained = [action.option_strings[0] for action in options if not action.help]
    assert not unexplained, f"hybatch bench {name}: options without help text: {unexplained}"


def test_beat_runs_celery_beat_of_the_worker_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`hybatch beat` is what docker-compose's beat service runs: it queues the monthly close."""
    started: list[list[str]] = []

    class CeleryApp:
        def start(self, argv: list[str]) -> None:
            started.append(argv)

    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setattr(cli, "_load_celery_app", CeleryApp)
    result = runner.invoke(cli.app, ["beat", "--loglevel", "warning"])
    assert result.exit_code == 0, result.output
    assert started == [
        ["beat", f"--schedule={tmp_path / 'var' / 'celerybeat-schedule'}", "--loglevel=warning"]
    ]


def test_beat_without_celery_app_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "CELERY_APP_MODULE", "worker.no_such_module")
    result = runner.invoke(cli.app, ["beat"])
    assert result.exit_code == 1 and "no Celery worker" in result.output


def test_quotas_set_and_show(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybatch import quotas

    monkeypatch.setenv("HYBATCH_MODEL_NAME", "tiny-test")
    monkeypatch.setenv("HYBATCH_ENQUEUED_TOKEN_LIMIT", "500")
    assert runner.invoke(cli.app, ["accounts", "create", "acme"]).exit_code == 0
    shown = runner.invoke(cli.app, ["quotas", "show", "--account", "acme"])
    assert shown.exit_code == 0 and "tiny-test: 0 prompt tokens enqueued, limit 500" in shown.output
    set_ = runner.invoke(cli.app, ["quotas", "set", "--account", "acme", "--tokens", "2000000"])
    assert set_.exit_code == 0 and "2,000,000 prompt tokens" in set_.output, set_.output
    with _session(database_url) as session:
        account_id = accounts.get_account(session, "acme").id
        assert quotas.token_limit(session, account_id, "tiny-test", 500) == 2_000_000
    assert "limit 2,000,000" in runner.invoke(cli.app, ["quotas", "show", "--account", "acme"]).output
    assert (
        runner.invoke(cli.app, ["quotas", "set", "--account", "acme"]).exit_code == 0
    )  # back to the default
    assert "limit 500" in runner.invoke(cli.app, ["quotas", "show", "--account", "acme"]).output
    unknown = runner.invoke(cli.app, ["quotas", "show", "--account", "nobody"])
    assert unknown.exit_code == 1 and "no account named 'nobody'" in unknown.output


def test_webhooks_create_list_delete(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBATCH_WEBHOOK_ALLOW_PRIVATE", "true")
    assert runner.invoke(cli.app, ["accounts", "create", "acme"]).exit_code == 0
    created = runner.invoke(
        cli.app,
        [
            "webhooks",
            "create",
            "--account",
            "acme",
            "--url",
            "http://127.0.0.1:9/hook",
            "--events",
            "batch.failed",
        ],
    )
    assert created.exit_code == 0, created.output
    summary, secret = created.output.strip().splitlines()
    endpoint_id = summary.split()[0]
    assert endpoint_id.startswith("we_") and "batch.failed" in summary and secret.startswith("whsec_")
    listed = runner.invoke(cli.app, ["webhooks", "list", "--account", "acme"])
    assert (
        endpoint_id in listed.output and "no deliveries yet" in listed.output and secret not in listed.output
    )
    assert runner.invoke(cli.app, ["webhooks", "delete", endpoint_id]).exit_code == 0
    assert endpoint_id not in runner.invoke(cli.app, ["webhooks", "list", "--account", "acme"]).output
    assert runner.invoke(cli.app, ["webhooks", "delete", endpoint_id]).exit_code == 1  # gone
    refused = runner.invoke(
        cli.app,
        ["webhooks", "create", "--account", "acme", "--url", "http://127.0.0.1:9/x", "--events", "nope"],
    )
    assert refused.exit_code == 1 and "Unsupported event types" in refused.output

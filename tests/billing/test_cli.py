"""``hybatch billing ...``: close, export, schedules load/assign/list (SQLite through the CLI)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybatch import cli
from hybatch.db import make_engine, make_session_factory
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version

runner = CliRunner()


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_DATABASE_URL", sqlite_url)
    return sqlite_url


def _run(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_close_and_export(cli_database: str, tmp_path: Path) -> None:
    engine = make_engine(cli_database)
    with make_session_factory(engine)() as session:
        acme, beta = add_customer(session, "acme"), add_customer(session, "beta")
        add_usage(session, acme, at("2026-03-03 10:00"), miss=200_000, out=1_000_000)
        add_usage(session, beta, at("2026-03-04 10:00"), out=10)
        session.commit()
    engine.dispose()
    first = _run("billing", "close", "--period", "2026-03")
    assert "closed 2026-03: 2 invoices" in first and "2.24 usd" in first
    assert "already closed; nothing changed" in _run("billing", "close", "--period", "2026-03")
    bad = runner.invoke(cli.app, ["billing", "close", "--period", "2026-3"])
    assert bad.exit_code == 1 and "YYYY-MM" in bad.output

    rows = list(csv.DictReader(io.StringIO(_run("billing", "export", "--period", "2026-03"))))
    assert {row["account"] for row in rows} == {"acme", "beta"}
    only = _run("billing", "export", "--period", "2026-03", "--account", "beta", "--format", "json")
    assert {row["account"] for row in json.loads(only)["detail"]} == {"beta"}
    target = tmp_path / "out.csv"
    _run("billing", "export", "--period", "2026-03", "--output", str(target))
    assert target.read_text(encoding="utf-8").startswith("row_type,period,invoice_id")
    not_closed = runner.invoke(cli.app, ["billing", "export", "--period", "2026-04"])
    assert not_closed.exit_code == 1 and "not closed" in not_closed.output


def test_schedules_load_assign_list(cli_database: str, tmp_path: Path) -> None:
    prices = {c: flat("1") for c in ("cache_hit_input", "cache_miss_input", "output")}
    path = tmp_path / "pro.json"
    path.write_text(json.dumps(schedule("pro", version("v1", "2026-01-01", [model_entry("*", prices)]))))
    assert "loaded pro@v1" in _run("billing", "schedules", "load", str(path))
    assert "unchanged pro@v1" in _run("billing", "schedules", "load", str(path))
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule: bad\ncurrency: xyz\nversions: []\n")
    result = runner.invoke(cli.app, ["billing", "schedules", "load", str(bad)])
    assert result.exit_code == 1 and "unknown currency" in result.output and "non-empty list" in result.output
    _run("accounts", "create", "acme")
    assigned = _run(
        "billing",
        "schedules",
        "assign",
        "--account",
        "acme",
        "--schedule",
        "pro",
        "--effective-from",
        "2026-02-01",
    )
    assert "acme is priced by 'pro' from 2026-02-01T00:00:00+00:00" in assigned
    listed = _run("billing", "schedules", "list")
    assert "default@2025-01  usd" in listed and "pro@v1  usd" in listed

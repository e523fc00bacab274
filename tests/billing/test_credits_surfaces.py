"""Prepaid credit where people see it: ``hybatch credits grant|balance`` and ``GET /v1/billing/credits``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybatch import cli
from hybatch.db import make_engine, make_session_factory
from tests.billing.ledger import add_customer

runner = CliRunner()


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_DATABASE_URL", sqlite_url)
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        add_customer(session, "acme")
        session.commit()
    engine.dispose()
    return sqlite_url


def _run(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_grant_and_balance(cli_database: str) -> None:
    assert "has no credit grants" in _run("credits", "balance", "--account", "acme")
    first = _run("credits", "grant", "--account", "acme", "--amount", "10.00", "--expires", "2099-01-31")
    # Money as the operator typed it (to the cent), and the day they named as the last one usable.
    assert "granted 10.00 usd to acme" in first
    assert "usable through 2099-01-31 UTC: it expires 2099-02-01 00:00 UTC" in first
    assert "balance: 10.00 usd" in first
    second = _run("credits", "grant", "--account", "acme", "--amount", "2.5", "--priority", "-1")
    assert "granted 2.50 usd" in second and "balance: 12.50 usd" in second
    shown = _run("credits", "balance", "--account", "acme").splitlines()
    assert shown[0] == "acme: balance 12.50 usd (held by running requests 0.00, spendable 12.50)"
    # Draw order: the priority -1 grant first, then the expiring one.
    assert "granted 2.50  drawn 0.00  left 2.50  priority -1" in shown[1]
    assert "granted 10.00 " in shown[2] and "expires 2099-02-01 00:00 UTC" in shown[2]


def test_exact_amounts_keep_every_digit_and_at_least_the_minor_unit() -> None:
    from decimal import Decimal

    from billing.money_text import exact_amount

    assert [exact_amount(Decimal(text), "usd") for text in ("10", "12.5", "8.4999", "0", "-0.5")] == [
        "10.00",
        "12.50",
        "8.4999",
        "0.00",
        "-0.50",
    ]
    assert (exact_amount(Decimal("1500"), "jpy"), exact_amount(Decimal("0.25"), "jpy")) == ("1500", "0.25")


def test_bad_grants_are_refused_with_the_reason(cli_database: str) -> None:
    for args, reason in (
        (("--amount", "ten"), "not a decimal number"),
        (("--amount", "1.001"), "minor unit"),
        (("--amount", "1", "--expires", "2099-13-01"), "not YYYY-MM-DD"),
        (("--amount", "1", "--expires", "2001-01-01"), "not in the future"),
    ):
        result = runner.invoke(cli.app, ["credits", "grant", "--account", "acme", *args])
        assert result.exit_code == 1 and reason in result.output, (args, result.output)
    missing = runner.invoke(cli.app, ["credits", "grant", "--account", "nobody", "--amount", "1"])
    assert missing.exit_code == 1


def test_the_http_balance(api, caller, session_factory) -> None:
    from decimal import Decimal

    from billing.credits.grants import grant_credits

    headers, customer = caller("acme")
    assert api.get("/v1/billing/credits", headers=headers).json() == {
        "object": "billing.credit_balance",
        "prepaid": False,
        "currency": None,
        "balance": None,
        "held": None,
        "spendable": None,
        "grants": [],
    }
    with session_factory() as session:
        grant = grant_credits(session, customer.account_id, amount=Decimal("10.00"), currency="usd")
        session.commit()
        grant_id = grant.id
    body = api.get("/v1/billing/credits", headers=headers).json()
    assert (body["prepaid"], body["currency"], body["balance"], body["spendable"]) == (
        True,
        "usd",
        "10",
        "10",
    )
    assert [(g["id"], g["amount"], g["remaining"], g["expired"]) for g in body["grants"]] == [
        (grant_id, "10", "10", False)
    ]
    assert api.get("/v1/billing/credits").status_code == 401

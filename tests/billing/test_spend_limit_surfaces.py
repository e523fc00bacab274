"""Spend limits where people meet them: ``hybatch limits set|show``, ``GET /v1/billing/limits`` and
``POST /v1/batches`` refused with an OpenAI-shaped error naming the limit."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.limits.spend_limits import set_limit
from hybatch import cli
from hybatch.db import make_engine, make_session_factory
from hybatch.models import ApiKey, UsageRecord
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


def spent(customer, amount: str) -> UsageRecord:
    """One recorded request of ``customer``'s key that cost ``amount`` usd (10 cache-miss tokens)."""
    return UsageRecord(
        account_id=customer.account_id,
        api_key_id=customer.api_key_id,
        batch_id=customer.batch_id,
        custom_id="spent",
        model="tiny-test",
        cache_hit_input_tokens=0,
        cache_miss_input_tokens=10,
        output_tokens=0,
        prompt_tokens=10,
        amount=Decimal(amount),
        currency="usd",
        price_version="default@x",
    )


def _run(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_set_show_and_remove(cli_database: str) -> None:
    assert "has no spend limits" in _run("limits", "show", "--account", "acme")
    assert "soft 50.00 usd, hard 80.00 usd" in _run(
        "limits", "set", "--account", "acme", "--soft", "50", "--hard", "80"
    )
    assert "key hb-acme: hard 5.00 usd" in _run(
        "limits", "set", "--account", "acme", "--key", "hb-acme", "--hard", "5"
    )
    shown = _run("limits", "show", "--account", "acme")
    assert "acme: soft 50.00  hard 80.00 usd" in shown and "key hb-acme: soft -  hard 5.00 usd" in shown
    bad = runner.invoke(cli.app, ["limits", "set", "--account", "acme", "--soft", "9", "--hard", "8"])
    assert bad.exit_code == 1 and "above hard" in bad.output
    unknown = runner.invoke(
        cli.app, ["limits", "set", "--account", "acme", "--key", "hb-nope", "--hard", "1"]
    )
    assert unknown.exit_code == 1 and "no API key hb-nope" in unknown.output
    assert "removed" in _run("limits", "set", "--account", "acme", "--soft", "none", "--hard", "none")
    assert _run("limits", "show", "--account", "acme").splitlines()[0].startswith("key hb-acme: ")


def _upload(api, headers) -> str:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    }
    response = api.post(
        "/v1/files",
        headers=headers,
        files={"file": ("in.jsonl", (json.dumps(line) + "\n").encode())},
        data={"purpose": "batch"},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_a_batch_past_the_hard_limit_is_refused(api, caller, session_factory) -> None:
    headers, customer = caller("acme")
    file_id = _upload(api, headers)
    create = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    with session_factory() as session:
        set_limit(
            session, customer.account_id, api_key_id=None, soft=None, hard=Decimal("0.01"), currency="usd"
        )
        session.commit()
    assert api.post("/v1/batches", headers=headers, json=create).status_code == 200  # nothing spent yet
    with session_factory() as session:
        session.add(spent(customer, "0.01"))
        session.commit()
    refused = api.post("/v1/batches", headers=headers, json=create)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "billing_hard_limit_reached" and error["type"] == "invalid_request_error"
    assert "hard spend limit of the account is reached: 0.01 usd" in error["message"]
    limits = api.get("/v1/billing/limits", headers=headers).json()
    assert [(row["scope"], row["hard"], row["spent"]) for row in limits["data"]] == [
        ("account", "0.01", "0.01")
    ]
    assert (limits["data"][0]["api_key_id"], limits["data"][0]["api_key_prefix"]) == (None, None)


def test_a_batch_past_its_keys_hard_limit_is_refused_naming_the_key(api, caller, session_factory) -> None:
    headers, customer = caller("acme")
    file_id = _upload(api, headers)
    create = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    with session_factory() as session:
        set_limit(
            session,
            customer.account_id,
            api_key_id=customer.api_key_id,
            soft=None,
            hard=Decimal("0.01"),
            currency="usd",
        )
        session.add(spent(customer, "0.015"))
        session.commit()
        prefix = session.get(ApiKey, customer.api_key_id).prefix
    error = api.post("/v1/batches", headers=headers, json=create).json()["error"]
    assert error["code"] == "billing_hard_limit_reached"
    assert f"hard spend limit of API key {prefix}… is reached: 0.01 usd, 0.015 usd spent" in error["message"]
    assert customer.api_key_id not in error["message"]
    [row] = api.get("/v1/billing/limits", headers=headers).json()["data"]
    assert (row["scope"], row["api_key_id"], row["api_key_prefix"]) == (
        "api_key",
        customer.api_key_id,
        prefix,
    )


def test_an_anthropic_message_batch_past_the_hard_limit_is_refused(api, caller, session_factory) -> None:
    headers, customer = caller("acme")
    key = headers["Authorization"].removeprefix("Bearer ")
    with session_factory() as session:
        set_limit(
            session, customer.account_id, api_key_id=None, soft=None, hard=Decimal("0.01"), currency="usd"
        )
        session.add(spent(customer, "0.02"))
        session.commit()
    body = {
        "requests": [
            {
                "custom_id": "a",
                "params": {
                    "model": "tiny-test",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            }
        ]
    }
    refused = api.post(
        "/v1/messages/batches", headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, json=body
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "hard spend limit of the account is reached: 0.01 usd, 0.02 usd spent" in error["message"]

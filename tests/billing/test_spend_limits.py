"""Monthly spend limits by hand-computed tables: the month's spend per account and key, batch creation
refused at a hard limit (OpenAI-shaped, naming it), holds admit only what fits, soft alerts once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from billing.alerts import SOFT_LIMIT_REACHED, check_soft_limits, recent_alerts
from billing.credits.holds import hold_credit
from billing.limits.spend_limits import check_batch_creation, limit_states, set_limit
from hybatch.errors import InvalidRequestError
from hybatch.models import Batch, BatchStatus
from tests.billing.ledger import Customer, add_api_key, add_customer, add_usage, at

D = Decimal
MARCH_NOW = at("2026-03-10 12:00")


def _spend(session: Session, customer: Customer, amount: str, when: str, currency: str = "usd") -> None:
    record = add_usage(session, customer, at(when), miss=10)
    record.amount, record.currency, record.price_version = D(amount), currency, "test@v1"
    session.flush()


def _world(session: Session) -> tuple[Customer, Customer]:
    """Key A spent 0.20 + 0.15 in March, key B 0.40; February's 5.00 and a eur amount do not count.
    Limits: the account soft 0.50 / hard 1.00, key A hard 0.30."""
    key_a = add_customer(session)
    key_b = add_api_key(session, key_a, "hb-key-b")
    _spend(session, key_a, "5.00", "2026-02-27 10:00")
    _spend(session, key_a, "0.20", "2026-03-02 10:00")
    _spend(session, key_a, "0.15", "2026-03-03 10:00")
    _spend(session, key_b, "0.40", "2026-03-04 10:00")
    _spend(session, key_b, "9.00", "2026-03-04 11:00", currency="eur")
    set_limit(session, key_a.account_id, api_key_id=None, soft=D("0.50"), hard=D("1.00"), currency="usd")
    set_limit(
        session, key_a.account_id, api_key_id=key_a.api_key_id, soft=None, hard=D("0.30"), currency="usd"
    )
    return key_a, key_b


def test_the_months_spend_per_scope(session: Session) -> None:
    key_a, key_b = _world(session)
    states = {state.scope: state for state in limit_states(session, key_a.account_id, None, MARCH_NOW)}
    assert states["account"].spent == D("0.75") and states["account"].room == D("0.25")
    assert states[key_a.api_key_id].spent == D("0.35") and states[key_a.api_key_id].room == D("-0.05")
    # A request of key B sees only the account's limit.
    assert [s.scope for s in limit_states(session, key_a.account_id, key_b.api_key_id, MARCH_NOW)] == [
        "account"
    ]


def test_a_new_batch_is_refused_at_a_hard_limit_naming_it(session: Session) -> None:
    key_a, key_b = _world(session)
    with pytest.raises(InvalidRequestError) as raised:
        check_batch_creation(session, key_a.account_id, key_a.api_key_id, at=MARCH_NOW)
    assert raised.value.code == "billing_hard_limit_reached"
    # The key is named as its owner knows it (its prefix), not by an id they never see.
    assert (
        "hard spend limit of API key hb-acme… is reached: 0.30 usd, 0.35 usd spent in 2026-03"
        in raised.value.message
    )
    assert key_a.api_key_id not in raised.value.message
    check_batch_creation(session, key_a.account_id, key_b.api_key_id, at=MARCH_NOW)  # 0.75 < 1.00
    _spend(session, key_b, "0.25", "2026-03-05 10:00")  # the account reaches 1.00 exactly
    with pytest.raises(InvalidRequestError, match="hard spend limit of the account is reached: 1.00 usd"):
        check_batch_creation(session, key_a.account_id, key_b.api_key_id, at=MARCH_NOW)
    # A new month starts from nothing.
    check_batch_creation(session, key_a.account_id, key_b.api_key_id, at=at("2026-04-01 00:00"))


def test_running_batches_admit_only_what_fits_under_the_hard_limit(session: Session) -> None:
    key_a, key_b = _world(session)
    session.get(Batch, key_b.batch_id).status = BatchStatus.IN_PROGRESS
    # Room for key B = 1.00 - 0.75 = 0.25: 0.10 fits (0.15 left), 0.20 does not, 0.15 fits (0 left).
    result = hold_credit(
        session,
        account_id=key_b.account_id,
        batch_id=key_b.batch_id,
        api_key_id=key_b.api_key_id,
        candidates=[("b1", D("0.10")), ("b2", D("0.20")), ("b3", D("0.15"))],
        at=MARCH_NOW,
    )
    assert result.held == {"b1", "b3"} and result.refused == {"b2": "spend_limit_reached"}
    states = limit_states(session, key_b.account_id, key_b.api_key_id, MARCH_NOW)
    assert [(s.held, s.room) for s in states] == [(D("0.25"), D("0"))]


def test_a_soft_limit_alerts_once_a_month(session: Session) -> None:
    key_a, _key_b = _world(session)
    states = limit_states(session, key_a.account_id, key_a.api_key_id, MARCH_NOW)
    assert check_soft_limits(session, key_a.account_id, states, D("0")) == ["account"]  # 0.75 >= 0.50
    assert check_soft_limits(session, key_a.account_id, states, D("0.01")) == []
    [alert] = recent_alerts(session, key_a.account_id)
    assert alert.kind == SOFT_LIMIT_REACHED and alert.dedupe_key == "2026-03:account"
    assert "soft spend limit of the account is reached: 0.50 usd, 0.75 usd spent in 2026-03" in alert.message


def test_a_keys_soft_limit_alert_names_the_key_by_its_prefix(session: Session) -> None:
    customer = add_customer(session)
    _spend(session, customer, "0.40", "2026-03-02 10:00")
    set_limit(
        session,
        customer.account_id,
        api_key_id=customer.api_key_id,
        soft=D("0.25"),
        hard=None,
        currency="usd",
    )
    states = limit_states(session, customer.account_id, customer.api_key_id, MARCH_NOW)
    assert [(s.scope, s.key_prefix) for s in states] == [(customer.api_key_id, "hb-acme")]
    assert check_soft_limits(session, customer.account_id, states, D("0")) == [customer.api_key_id]
    [alert] = recent_alerts(session, customer.account_id)
    assert alert.message.startswith("The monthly soft spend limit of API key hb-acme… is reached: 0.25 usd")


def test_a_soft_limit_not_yet_reached_counts_the_request_being_recorded(session: Session) -> None:
    customer = add_customer(session)
    _spend(session, customer, "0.49", "2026-03-02 10:00")
    set_limit(session, customer.account_id, api_key_id=None, soft=D("0.50"), hard=None, currency="usd")
    states = limit_states(session, customer.account_id, None, MARCH_NOW)
    assert check_soft_limits(session, customer.account_id, states, D("0.009")) == []  # 0.499
    assert check_soft_limits(session, customer.account_id, states, D("0.01")) == ["account"]  # 0.50


def test_bad_limits_are_refused_with_every_problem(session: Session) -> None:
    customer = add_customer(session)
    with pytest.raises(InvalidRequestError) as raised:
        set_limit(session, customer.account_id, api_key_id=None, soft=D("2.001"), hard=D("1"), currency="usd")
    assert "minor unit" in raised.value.message and "above hard" in raised.value.message
    with pytest.raises(InvalidRequestError, match="positive"):
        set_limit(session, customer.account_id, api_key_id=None, soft=None, hard=D("0"), currency="usd")

"""Schedules in the database: versioned, immutable, assignable; the default loads itself."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.pricing.schedule_parser import ScheduleInvalidError, parse_schedule
from billing.pricing.schedule_store import (
    NoScheduleInEffectError,
    assign_schedule,
    list_versions,
    load_schedule,
    price_book,
)
from billing.pricing.schedule_version import TokenClass
from hybatch.errors import ConflictError, NotFoundError
from hybatch.models import BillingPeriodClose
from tests.billing.ledger import add_customer, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version

PRICES = {c: flat("1") for c in ("cache_hit_input", "cache_miss_input", "output")}


def _file(name: str, *versions: tuple[str, str, str], currency: str = "usd"):
    built = [
        version(label, start, [model_entry("*", {c: flat(price) for c in PRICES})])
        for label, start, price in versions
    ]
    return parse_schedule(schedule(name, *built, currency=currency))


def test_the_default_schedule_loads_on_first_use(session: Session) -> None:
    customer = add_customer(session)
    book = price_book(session, customer.account_id)
    current = book.at(at("2026-03-01 00:00"))
    assert current.price_version == "default@2025-01"
    assert current.table("tiny-test", "upto_256k", TokenClass.OUTPUT).tiers[0].unit_price == Decimal("2.10")
    with pytest.raises(NoScheduleInEffectError):
        book.at(at("2024-12-31 23:59"))
    assert [row.schedule for row in list_versions(session)] == ["default"]


def test_versions_are_immutable_and_never_overlap(session: Session) -> None:
    first = load_schedule(session, _file("pro", ("v1", "2026-01-01", "1"), ("v2", "2026-02-01", "2")))
    assert first.added == ["pro@v1", "pro@v2"]
    again = load_schedule(session, _file("pro", ("v1", "2026-01-01", "1"), ("v2", "2026-02-01", "2")))
    assert again.added == [] and again.unchanged == ["pro@v1", "pro@v2"]
    with pytest.raises(ScheduleInvalidError, match="already loaded with other prices"):
        load_schedule(session, _file("pro", ("v1", "2026-01-01", "1"), ("v2", "2026-02-01", "9")))
    with pytest.raises(ScheduleInvalidError, match="overlaps loaded version pro@v2"):
        load_schedule(session, _file("pro", ("v3", "2026-01-15", "3")))
    with pytest.raises(ScheduleInvalidError, match="priced in usd"):
        load_schedule(session, _file("pro", ("v9", "2026-06-01", "1"), currency="eur"))
    assert load_schedule(session, _file("pro", ("v3", "2026-03-01", "3"))).added == ["pro@v3"]


def test_a_closed_period_is_never_repriced(session: Session) -> None:
    session.add(BillingPeriodClose(period=str(Period(2026, 2))))
    session.flush()
    with pytest.raises(ScheduleInvalidError, match="closed billing period 2026-02"):
        load_schedule(session, _file("pro", ("v1", "2026-02-15", "1")))
    load_schedule(session, _file("pro", ("v1", "2026-03-01", "1")))
    customer = add_customer(session)
    with pytest.raises(ConflictError, match="closed"):
        assign_schedule(session, customer.account_id, "pro", at("2026-02-20 00:00"))


def test_assignments_switch_schedules_over_time(session: Session) -> None:
    load_schedule(session, _file("pro", ("v1", "2026-01-01", "5"), ("v2", "2026-03-01", "4")))
    customer = add_customer(session)
    other = add_customer(session, "other")
    assign_schedule(session, customer.account_id, "pro", at("2026-02-10 12:00"))
    assign_schedule(session, customer.account_id, "default", at("2026-04-01 00:00"))
    book = price_book(session, customer.account_id)
    assert book.at(at("2026-02-10 11:59")).price_version == "default@2025-01"
    assert book.at(at("2026-02-10 12:00")).price_version == "pro@v1"
    assert book.at(at("2026-03-15 00:00")).price_version == "pro@v2"
    assert book.at(at("2026-04-01 00:00")).price_version == "default@2025-01"
    assert price_book(session, other.account_id).at(at("2026-03-01 00:00")).price_version == "default@2025-01"
    with pytest.raises(NotFoundError):
        assign_schedule(session, customer.account_id, "nope", at("2026-05-01 00:00"))
    with pytest.raises(ConflictError, match="already has an assignment"):
        assign_schedule(session, customer.account_id, "pro", at("2026-04-01 00:00"))
    load_schedule(session, _file("euro", ("v1", "2026-01-01", "1"), currency="eur"))
    with pytest.raises(ConflictError, match="priced in eur"):
        assign_schedule(session, customer.account_id, "euro", at("2026-05-01 00:00"))

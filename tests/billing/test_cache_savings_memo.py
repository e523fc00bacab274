"""The in-memory month cache of ``billing.usage.cache_savings``: reused while the ledger and prices are
unchanged, recomputed when a record lands in the month or the account's prices change."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from billing.usage import cache_savings
from billing.usage.cache_savings import MonthSavingsCache, savings_by_record
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version

MARCH = Period(2026, 3)


@pytest.fixture
def ratings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Period]]:
    """Months actually rated, in order, with a fresh cache for the test."""
    rated: list[Period] = []
    real = cache_savings.month_savings

    def counting(rows, book, period):
        rated.append(period)
        return real(rows, book, period)

    monkeypatch.setattr(cache_savings, "month_savings", counting)
    monkeypatch.setattr(cache_savings, "month_savings_cache", MonthSavingsCache(max_months=2))
    yield rated


def test_unchanged_months_are_not_rated_again(session: Session, ratings: list[Period]) -> None:
    customer = add_customer(session, "memo")
    first = add_usage(session, customer, at("2026-03-05 10:00"), hit=1000, miss=10, out=5, model="tiny-test")
    first_saved = savings_by_record(session, customer.account_id, [MARCH])
    # the default schedule's "*" prices: a hit 0.07, a miss 0.70 per 1M tokens
    assert first_saved == {first.id: Decimal(1000) * (Decimal("0.70") - Decimal("0.07")) / 1_000_000}
    assert savings_by_record(session, customer.account_id, [MARCH]) == first_saved
    assert ratings == [MARCH]

    second = add_usage(session, customer, at("2026-03-20 10:00"), hit=500, miss=0, out=1, model="tiny-test")
    again = savings_by_record(session, customer.account_id, [MARCH])
    assert set(again) == {first.id, second.id} and ratings == [MARCH, MARCH]


def test_new_prices_rate_the_month_again(session: Session, ratings: list[Period]) -> None:
    customer = add_customer(session, "repriced")
    record = add_usage(session, customer, at("2026-03-05 10:00"), hit=1000, miss=10, out=5, model="tiny-test")
    before = savings_by_record(session, customer.account_id, [MARCH])[record.id]
    cheap_hits = schedule(
        "cheap",
        version(
            "v1",
            "2026-01-01T00:00:00Z",
            [
                model_entry(
                    "*", {"cache_hit_input": flat("0"), "cache_miss_input": flat("1"), "output": flat("1")}
                )
            ],
        ),
    )
    load_schedule(session, parse_schedule(cheap_hits))
    assign_schedule(session, customer.account_id, "cheap", at("2026-03-01 00:00"))
    after = savings_by_record(session, customer.account_id, [MARCH])[record.id]
    assert after == Decimal(1000) * Decimal(1) / 1_000_000 != before
    assert ratings == [MARCH, MARCH]


def test_the_cache_keeps_only_the_most_recent_months(session: Session, ratings: list[Period]) -> None:
    customer = add_customer(session, "lru")
    months = [Period(2026, 1), Period(2026, 2), Period(2026, 3)]
    for month in months:
        add_usage(session, customer, month.start, hit=100, miss=1, out=1, model="tiny-test")
    for month in months:
        savings_by_record(session, customer.account_id, [month])
    savings_by_record(session, customer.account_id, [months[0]])  # evicted by the third: rated again
    savings_by_record(session, customer.account_id, [months[2]])  # still cached
    assert ratings == [*months, months[0]]

"""Budget caps: parsing metadata.max_cost, the skip rule at its edge, the worst-case bound."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.pricing.budget_cap import parse_max_cost, should_skip, worst_case_cost
from tests.billing.books import book_of
from tests.billing.ledger import at
from tests.billing.schedule_docs import flat, model_entry, table, version

D = Decimal


def test_parse_max_cost() -> None:
    assert parse_max_cost(None) is None
    assert parse_max_cost({"team": "x"}) is None
    assert parse_max_cost({"max_cost": " 12.50 "}) == D("12.50")
    assert parse_max_cost({"max_cost": "0"}) == 0
    for bad in ("-1", "abc", "NaN", "Infinity", ""):
        with pytest.raises(ValueError, match="max_cost"):
            parse_max_cost({"max_cost": bad})


def test_should_skip_at_the_edge() -> None:
    assert not should_skip(D("9"), D("1"), None)
    assert not should_skip(D("9"), D("1"), D("10"))  # exactly reaching the cap is fine
    assert should_skip(D("9"), D("1.000001"), D("10"))
    assert should_skip(D("0"), D("0.01"), D("0"))
    assert not should_skip(D("0"), D("0"), D("0"))


def test_worst_case_uses_misses_and_the_dearest_tier() -> None:
    prices = {
        "cache_hit_input": flat("0.1"),
        "cache_miss_input": table("graduated", (100, "1"), (None, "3")),
        "output": table("volume", (100, "5"), (None, "4")),
    }
    current = book_of(version("v1", "2026-01-01", [model_entry("*", prices)])).at(at("2026-03-01 00:00"))
    assert worst_case_cost(current, "m", 200, 50) == D(200 * 3 + 50 * 5) / 1_000_000

"""Number formats on the dashboard, against hand-written expectations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from api.dashboard import formatting


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal("1234.5"), "usd", "$1,234.50"),
        (Decimal("0.015"), "usd", "$0.02"),  # half a cent rounds up (ROUND_HALF_UP)
        (Decimal("0.005"), "usd", "$0.005"),
        (Decimal("0.0042"), "usd", "$0.0042"),  # under a cent: not shown as free
        (Decimal("0.007524"), "usd", "$0.0075"),  # two significant digits
        (Decimal("0.000037"), "usd", "$0.000037"),
        (Decimal("0.00999"), "usd", "$0.01"),  # rounds up to a whole cent
        (Decimal("0"), "usd", "$0.00"),
        (Decimal("-3.456"), "eur", "-€3.46"),
        (Decimal("1500"), "jpy", "¥1,500"),
        (Decimal("12.3"), "chf", "12.30 CHF"),
        (None, "usd", "—"),
    ],
)
def test_money(amount, currency, expected) -> None:
    assert formatting.money(amount, currency) == expected


def test_minor_money_and_unit_price() -> None:
    assert formatting.minor_money(1234, "usd") == "$12.34"
    assert formatting.unit_price(Decimal("0.056"), "usd") == "$0.056 / 1M tokens"
    assert formatting.unit_price(Decimal("2"), "usd", False) == "$2.00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(999, "999"), (1000, "1K"), (1234567, "1.23M"), (2_500_000_000, "2.5B"), (Decimal("0.5"), "0")],
)
def test_compact(value, expected) -> None:
    assert formatting.compact(value) == expected


def test_integer_percent_timestamp_duration() -> None:
    assert formatting.integer(1234567) == "1,234,567"
    assert formatting.percent(Decimal("0.93456")) == "93.5%"
    assert formatting.percent(None) == "—"
    assert formatting.timestamp(datetime(2026, 11, 28, 9, 24, 52, tzinfo=UTC)) == "2026-11-28 09:24 UTC"
    assert formatting.duration(timedelta(seconds=30)) == "< 1 min"
    assert formatting.duration(timedelta(seconds=3725)) == "1 h 2 min"
    assert formatting.duration(timedelta(days=2, minutes=5)) == "2 d 5 min"

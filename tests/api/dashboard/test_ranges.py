"""Usage ranges: their bounds and bucket widths, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.dashboard.ranges import parse_range, recent_months
from billing.periods import Period
from hybatch.errors import InvalidRequestError

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)


def test_presets() -> None:
    today = parse_range("today", None, NOW)
    assert (today.start, today.end, today.bucket_width) == (datetime(2026, 11, 28, tzinfo=UTC), NOW, "1h")
    week = parse_range("7d", None, NOW)
    assert (week.start, week.bucket_width) == (datetime(2026, 11, 22, tzinfo=UTC), "1d")  # 7 days incl. today
    assert parse_range(None, None, NOW).start == datetime(2026, 10, 30, tzinfo=UTC)  # default: 30 days


def test_month_ranges() -> None:
    october = parse_range("month", "2026-10", NOW)
    assert (october.start, october.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert october.label == "October 2026" and october.query == {"range": "month", "month": "2026-10"}
    current = parse_range("month", None, NOW)
    assert (current.start, current.end) == (datetime(2026, 11, 1, tzinfo=UTC), NOW)


@pytest.mark.parametrize(("preset", "month"), [("forever", None), ("month", "2026-13"), ("month", "2027-01")])
def test_bad_ranges_name_their_parameter(preset, month) -> None:
    with pytest.raises(InvalidRequestError) as error:
        parse_range(preset, month, NOW)
    assert error.value.param in ("range", "month", "period")


def test_recent_months_cross_a_year() -> None:
    months = recent_months(datetime(2026, 2, 3, tzinfo=UTC), count=4)
    assert months == [Period(2026, 2), Period(2026, 1), Period(2025, 12), Period(2025, 11)]

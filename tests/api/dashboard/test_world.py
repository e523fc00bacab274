"""The dashboard world keeps its shape on any day: pinned at the edges of months, every usage record
lies in the current month or the closed one before it, and the last 7 days hold exactly this month's.

These pin their own clocks, so they guard the world on whatever day the suite runs.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import time_machine

from api.dashboard.ranges import parse_range
from billing.periods import Period
from hybatch.db import make_engine, make_session_factory
from hybatch.models import Account, UsageRecord, utc_now
from hybatch.storage import LocalFileStorage
from tests.api.dashboard.world import World, build_world

pytestmark = pytest.mark.dated  # builds its data relative to now

EDGES_OF_MONTHS = [
    "2027-03-01T00:20:00+00:00",  # the first hour of a month, after a 28-day February
    "2028-03-01T00:01:00+00:00",  # the first minute of a month, after a 29-day February
    "2027-01-01T00:20:00+00:00",  # the first hour of a year: the closed month is last December
    "2027-01-31T23:40:00+00:00",  # the last hour of a month
    "2028-02-29T12:00:00+00:00",  # 29 February
]


def _built_at(pin: str, sqlite_url: str, tmp_path: Path) -> tuple[World, list[tuple[str, datetime]]]:
    engine = make_engine(sqlite_url)
    try:
        with time_machine.travel(datetime.fromisoformat(pin), tick=False):
            world = build_world(make_session_factory(engine), LocalFileStorage(tmp_path / "files"), utc_now())
        with engine.connect() as connection:
            usage = connection.execute(
                sa.select(Account.name, UsageRecord.created_at).join(
                    Account, Account.id == UsageRecord.account_id
                )
            ).all()
    finally:
        engine.dispose()
    return world, [(name, created_at) for name, created_at in usage]


@pytest.mark.parametrize("pin", EDGES_OF_MONTHS)
def test_usage_lies_in_the_current_and_the_closed_month(pin: str, sqlite_url: str, tmp_path: Path) -> None:
    world, usage = _built_at(pin, sqlite_url, tmp_path)
    current, closed = world.current_period, world.closed_period
    assert world.now == datetime.fromisoformat(pin) and current == Period.containing(world.now)
    assert closed == current.previous()
    by_month = Counter((name, Period.containing(created_at)) for name, created_at in usage)
    assert by_month == {
        ("alice", current): 120,
        ("bob", current): 30,
        ("alice", closed): 60,
        ("bob", closed): 20,
    }
    assert all(created_at < world.now for _, created_at in usage)


@pytest.mark.parametrize("pin", EDGES_OF_MONTHS)
def test_the_last_seven_days_hold_exactly_this_months_usage(
    pin: str, sqlite_url: str, tmp_path: Path
) -> None:
    world, usage = _built_at(pin, sqlite_url, tmp_path)
    week = parse_range("7d", None, world.now)
    in_week = Counter(name for name, created_at in usage if week.start <= created_at < week.end)
    assert in_week == {"alice": 120, "bob": 30}

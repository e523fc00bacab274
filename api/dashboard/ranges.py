"""The time ranges the usage pages offer: today (hourly), the last 7 or 30 days, a calendar month.

All ranges are in UTC, like the usage API and the billing periods. A range ends at ``now`` when
it reaches into the future, so the last bucket is the one in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends

from billing.periods import Period
from hybatch.errors import InvalidRequestError
from hybatch.models import utc_now

PRESETS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "month": "A month"}
DEFAULT_PRESET = "30d"


@dataclass(frozen=True)
class UsageRange:
    preset: str  # a key of PRESETS
    start: datetime
    end: datetime
    bucket_width: str  # "1h" or "1d", as the usage API names them
    month: Period | None  # the chosen month when preset == "month"

    @property
    def label(self) -> str:
        if self.month is not None:
            return self.month.start.strftime("%B %Y")
        return PRESETS[self.preset]

    @property
    def query(self) -> dict[str, str]:
        """The query string that selects this range again."""
        return {"range": self.preset, "month": str(self.month)} if self.month else {"range": self.preset}


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def parse_range(preset: str | None, month: str | None, now: datetime) -> UsageRange:
    """The range a page's ``range`` (and ``month``) query parameters select; 400 when unknown."""
    preset = preset or DEFAULT_PRESET
    today = _midnight(now)
    if preset == "today":
        return UsageRange(preset, today, now, "1h", None)
    if preset in ("7d", "30d"):
        days = int(preset[:-1])
        return UsageRange(preset, today - timedelta(days=days - 1), now, "1d", None)
    if preset == "month":
        period = Period.parse(month) if month else Period.containing(now)
        if period.start > now:
            raise InvalidRequestError(f"{period} has not started yet", code="invalid_value", param="month")
        return UsageRange(preset, period.start, min(period.end, now), "1d", period)
    raise InvalidRequestError(
        f"range must be one of {', '.join(PRESETS)}", code="invalid_value", param="range"
    )


def recent_months(now: datetime, count: int = 12) -> list[Period]:
    """The ``count`` months up to the current one, newest first (for the month picker)."""
    months = [Period.containing(now)]
    while len(months) < count:
        months.append(months[-1].previous())
    return months


def range_from_query(
    range: str | None = None,  # noqa: A002 - the query parameter's name
    month: str | None = None,
) -> UsageRange:
    """The range a page's ``?range=…&month=…`` selects, ending now."""
    return parse_range(range, month, utc_now())


UsageRangeDep = Annotated[UsageRange, Depends(range_from_query)]

"""Billing periods: calendar months in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from hybatch.errors import InvalidRequestError

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, order=True)
class Period:
    """One month ``[start, end)`` in UTC."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"2026-03"`` -> Period(2026, 3); raises InvalidRequestError (param ``period``)."""
        match = _PERIOD.match(text)
        if match is None:
            raise InvalidRequestError(
                f"period {text!r} must look like YYYY-MM", code="invalid_period", param="period"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, moment: datetime) -> Period:
        moment = moment.astimezone(UTC)
        return cls(moment.year, moment.month)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), 12 if self.month == 1 else self.month - 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

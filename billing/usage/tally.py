"""Running usage sums (requests, token classes, cost, what the cache saved) and their totals.

``GET /v1/usage``, the dashboard's summary and the operators' overview all add requests up with
``UsageTally``: exact decimals, one rule for unpriced requests and unknown savings.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from billing.money import EXACT, ZERO

if TYPE_CHECKING:
    from billing.usage.buckets import RequestUsage

_RATIO = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)  # hit rates: not money


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    cache_hit_input_tokens: int
    cache_miss_input_tokens: int
    output_tokens: int
    cost: Decimal  # sum of the priced requests' x_billing amounts, unrounded major units
    unpriced_requests: int  # requests whose output line has no x_billing (not in ``cost``)
    saved_by_cache: Decimal | None  # None: a month of these requests cannot be rated (nor invoiced)

    @property
    def input_tokens(self) -> int:
        return self.cache_hit_input_tokens + self.cache_miss_input_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def hit_rate(self) -> Decimal | None:
        """Cache-hit share of the input tokens (28 significant digits); None without input."""
        if self.input_tokens == 0:
            return None
        return _RATIO.divide(Decimal(self.cache_hit_input_tokens), Decimal(self.input_tokens))


class UsageTally:
    """Running sums of requests, token classes, cost and savings (exact decimals)."""

    __slots__ = (
        "requests",
        "hit",
        "miss",
        "output",
        "cost",
        "currency",
        "unpriced",
        "saved",
        "is_saved_known",
    )

    def __init__(self) -> None:
        self.requests = self.hit = self.miss = self.output = self.unpriced = 0
        self.cost = self.saved = ZERO
        self.currency: str | None = None  # of the first priced request
        self.is_saved_known = True

    def add(self, row: RequestUsage, saving: Decimal | None) -> None:
        self.add_request(
            row.cache_hit_input_tokens,
            row.cache_miss_input_tokens,
            row.output_tokens,
            row.amount,
            row.currency,
            saving,
        )

    def add_request(
        self,
        hit: int,
        miss: int,
        output: int,
        amount: Decimal | None,
        currency: str | None,
        saving: Decimal | None,
    ) -> None:
        """One request's tokens, its cost (None: unpriced) and its saving (None: unknown)."""
        self.requests += 1
        self.hit += hit
        self.miss += miss
        self.output += output
        if amount is None:
            self.unpriced += 1
        else:
            self.cost = EXACT.add(self.cost, amount)
            self.currency = self.currency or currency
        if saving is None:
            self.is_saved_known = False
        else:
            self.saved = EXACT.add(self.saved, saving)

    def merge(self, other: UsageTally) -> None:
        self.requests += other.requests
        self.hit += other.hit
        self.miss += other.miss
        self.output += other.output
        self.unpriced += other.unpriced
        self.cost = EXACT.add(self.cost, other.cost)
        self.currency = self.currency or other.currency
        self.saved = EXACT.add(self.saved, other.saved)
        self.is_saved_known = self.is_saved_known and other.is_saved_known

    def totals(self) -> UsageTotals:
        return UsageTotals(
            requests=self.requests,
            cache_hit_input_tokens=self.hit,
            cache_miss_input_tokens=self.miss,
            output_tokens=self.output,
            cost=self.cost,
            unpriced_requests=self.unpriced,
            saved_by_cache=self.saved if self.is_saved_known else None,
        )

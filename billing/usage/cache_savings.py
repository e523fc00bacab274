"""What the prefix cache saved: each record's cache hits priced as cache misses, minus their price.

Priced the way the invoice prices a month: all of the account's records of the month, in ledger
order, rated by ``rate_month`` twice — as recorded, and as if every cache-hit token had been a
cache miss (``prompt_tokens`` unchanged, so the context tier stays). A record's saving is its
counterfactual amount minus its actual amount. With tiered tables the counterfactual also moves
later records' cache-miss tokens to other tiers, so one record's saving can be negative; a
month's savings add up to the difference between the two whole-month ratings.

Late records of an already billed month are rated here in ledger order with the rest of their
month; their invoice rates them after the month's billed volume instead, which can differ only
when such a record crosses a tier edge.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import EXACT, ZERO
from billing.periods import Period
from billing.pricing.rating import UsageRow, rate_month
from billing.pricing.schedule_store import NoScheduleInEffectError, PriceBook, price_book
from billing.pricing.schedule_version import TokenClass, UnpricedModelError
from hybatch.models import UsageRecord


def without_cache(row: UsageRow) -> UsageRow:
    """``row`` as if its cache-hit tokens had been computed: cache misses, same prompt length."""
    hit = row.tokens[TokenClass.CACHE_HIT_INPUT]
    tokens = {
        TokenClass.CACHE_HIT_INPUT: 0,
        TokenClass.CACHE_MISS_INPUT: row.tokens[TokenClass.CACHE_MISS_INPUT] + hit,
        TokenClass.OUTPUT: row.tokens[TokenClass.OUTPUT],
    }
    return UsageRow(row.usage_record_id, row.created_at, row.model, row.prompt_tokens, tokens)


def month_savings(rows: list[UsageRow], book: PriceBook, period: Period) -> dict[int, Decimal]:
    """Saving per usage record id of ``rows`` (all of one account's records of ``period``, in
    ledger order), exact major units. Raises UnpricedModelError / NoScheduleInEffectError."""
    saved = dict.fromkeys((row.usage_record_id for row in rows), ZERO)
    uncached = [without_cache(row) for row in rows]
    for piece in rate_month(uncached, book, origin_period=str(period)):
        saved[piece.usage_record_id] = EXACT.add(saved[piece.usage_record_id], piece.amount)
    for piece in rate_month(rows, book, origin_period=str(period)):
        saved[piece.usage_record_id] = EXACT.subtract(saved[piece.usage_record_id], piece.amount)
    return saved


def savings_by_record(
    session: Session, account_id: str, months: Iterable[Period]
) -> dict[int, Decimal | None]:
    """Saving of every record of the account in ``months`` (reads only).

    None for each record of a month that cannot be rated (a model without a price, or no schedule
    in effect): its invoice cannot be priced either, and a saving from the records that can be
    rated would depend on tier progress that is unknown.

    A month's savings are kept in memory (``MonthSavingsCache``) under the month's record count
    and last record id and the price book's fingerprint: the ledger only grows (a late record gets
    a new, larger id), so an equal key means the same records priced the same way.
    """
    wanted = sorted(set(months))
    if not wanted:
        return {}
    book = price_book(session, account_id)
    database = session.get_bind().url.render_as_string(hide_password=True)
    saved: dict[int, Decimal | None] = {}
    missing: dict[Period, tuple] = {}
    for month in wanted:
        key = (database, account_id, str(month), *_ledger_mark(session, account_id, month), book.fingerprint)
        cached = month_savings_cache.get(key)
        if cached is None:
            missing[month] = key
        else:
            saved.update(cached)
    for month, rows in _rows_by_month(session, account_id, set(missing)).items():
        try:
            savings: dict[int, Decimal | None] = dict(month_savings(rows, book, month))
        except (UnpricedModelError, NoScheduleInEffectError):
            savings = dict.fromkeys((row.usage_record_id for row in rows), None)
        month_savings_cache.put(missing[month], savings)
        saved.update(savings)
    return saved


def _ledger_mark(session: Session, account_id: str, month: Period) -> tuple[int, int | None]:
    """(record count, last record id) of the account's records created in ``month``."""
    count, last_id = session.execute(
        sa.select(sa.func.count(UsageRecord.id), sa.func.max(UsageRecord.id)).where(
            UsageRecord.account_id == account_id,
            UsageRecord.created_at >= month.start,
            UsageRecord.created_at < month.end,
        )
    ).one()
    return int(count), last_id


def _rows_by_month(session: Session, account_id: str, months: set[Period]) -> dict[Period, list[UsageRow]]:
    """The account's records of ``months`` as rating rows, in ledger order (one query)."""
    if not months:
        return {}
    # Output tokens are left out: each charge's tiers count that charge's volume only, so output is
    # priced alike with and without the cache and its pieces would cancel. (So a record of a model
    # without a price that has no prompt tokens rates here, saving nothing; its invoice would fail.)
    rows_by_month: dict[Period, list[UsageRow]] = defaultdict(list)
    month = min(months)
    for record_id, created_at, model, hit, miss in session.execute(
        sa.select(
            UsageRecord.id,
            UsageRecord.created_at,
            UsageRecord.model,
            UsageRecord.cache_hit_input_tokens,
            UsageRecord.cache_miss_input_tokens,
        )
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.created_at >= month.start,
            UsageRecord.created_at < max(months).end,
        )
        .order_by(UsageRecord.created_at, UsageRecord.id)
    ):
        if created_at >= month.end:  # records come in time order: find the month at each edge
            month = Period.containing(created_at)
        if month in months:
            tokens = {
                TokenClass.CACHE_HIT_INPUT: hit,
                TokenClass.CACHE_MISS_INPUT: miss,
                TokenClass.OUTPUT: 0,
            }
            prompt_tokens = hit + miss  # a check constraint of the ledger
            rows_by_month[month].append(UsageRow(record_id, created_at, model, prompt_tokens, tokens))
    return rows_by_month


class MonthSavingsCache:
    """A small LRU of months' savings per record, shared by the threads of one process."""

    def __init__(self, max_months: int) -> None:
        self.max_months = max_months
        self._months: OrderedDict[tuple, dict[int, Decimal | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> dict[int, Decimal | None] | None:
        with self._lock:
            savings = self._months.get(key)
            if savings is not None:
                self._months.move_to_end(key)
            return savings

    def put(self, key: tuple, savings: dict[int, Decimal | None]) -> None:
        with self._lock:
            self._months[key] = savings
            self._months.move_to_end(key)
            while len(self._months) > self.max_months:
                self._months.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._months.clear()


# A month of 10,000 records is about 2 MB of savings; 16 months bound the memory.
month_savings_cache = MonthSavingsCache(max_months=16)

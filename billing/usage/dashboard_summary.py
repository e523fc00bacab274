"""The dashboard's usage summary: buckets, totals and breakdowns of one account's usage.

Counted from the same rows as ``GET /v1/usage`` (``billing.usage.buckets.usage_rows``) and bucketed the
same way (``start + k * width``, the last bucket cut at ``end``), so its tokens, requests and
costs equal that endpoint's for the same range. Costs are the requests' marginal ``x_billing``
amounts; the month's invoice is authoritative. ``saved_by_cache`` is priced like the invoice
(see ``billing.usage.cache_savings``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.usage.buckets import (
    BUCKET_WIDTHS,
    account_currency,
    bucket_index,
    bucket_starts,
    usage_rows,
)
from billing.usage.cache_savings import savings_by_record
from billing.usage.tally import UsageTally, UsageTotals
from hybatch.errors import ConflictError, InvalidRequestError
from hybatch.models import ApiKey, utc_now

MAX_BUCKETS = 1000  # 41 days of 1h buckets, 2.7 years of 1d buckets


@dataclass(frozen=True)
class UsageBucket:
    start: datetime
    end: datetime  # start + width, or the summary's end for the last bucket
    totals: UsageTotals


@dataclass(frozen=True)
class BreakdownRow:
    key: str  # api key id, model or batch id
    label: str  # what to show: the key's visible prefix (never a secret), the model, the batch id
    totals: UsageTotals


@dataclass(frozen=True)
class UsageSummary:
    account_id: str
    start: datetime
    end: datetime
    bucket_width: str  # "1h" | "1d"
    currency: str
    buckets: tuple[UsageBucket, ...]
    totals: UsageTotals
    by_api_key: tuple[BreakdownRow, ...]  # each sorted by cost, then total tokens (both descending), key
    by_model: tuple[BreakdownRow, ...]
    by_batch: tuple[BreakdownRow, ...]


def summarize_usage(
    session: Session,
    account_id: str,
    *,
    start: datetime,
    end: datetime,
    bucket_width: str,  # "1h" | "1d"
    now: datetime | None = None,
) -> UsageSummary:
    """Usage of ``account_id`` created in ``[start, end)``; reads only (may load the default schedule).

    ``now`` (default: the clock) picks the currency shown when no request in the range is priced.
    Raises InvalidRequestError for an unknown width, ``end <= start`` or more than MAX_BUCKETS
    buckets, ConflictError when the range's requests are priced in several currencies.
    """
    if bucket_width not in BUCKET_WIDTHS:
        raise InvalidRequestError(
            "bucket_width must be one of 1h, 1d", code="invalid_value", param="bucket_width"
        )
    if end <= start:
        raise InvalidRequestError("end must be after start", code="invalid_value", param="end")
    width = BUCKET_WIDTHS[bucket_width]
    num_buckets = -(-(end - start) // width)  # the last one may be cut short
    if num_buckets > MAX_BUCKETS:
        raise InvalidRequestError(
            f"at most {MAX_BUCKETS} buckets of {bucket_width}", code="invalid_value", param="end"
        )
    starts = bucket_starts(start, end, width)
    rows = usage_rows(session, account_id, start, end)
    saved = savings_by_record(session, account_id, {Period.containing(row.created_at) for row in rows})
    currencies = {row.currency for row in rows if row.currency is not None}
    if len(currencies) > 1:
        raise ConflictError(f"account {account_id} has usage priced in several currencies: {currencies}")
    currency = currencies.pop() if currencies else account_currency(session, account_id, now or utc_now())

    # one tally per (bucket, key, model, batch) first: far fewer groups than requests
    groups: dict[tuple[int, str, str, str], UsageTally] = defaultdict(UsageTally)
    for row in rows:
        group = (bucket_index(row.created_at, start, width), row.api_key_id, row.model, row.batch_id)
        groups[group].add(row, saved[row.usage_record_id])
    total = UsageTally()
    buckets = [UsageTally() for _ in starts]
    by_key: dict[str, UsageTally] = defaultdict(UsageTally)
    by_model: dict[str, UsageTally] = defaultdict(UsageTally)
    by_batch: dict[str, UsageTally] = defaultdict(UsageTally)
    for (index, api_key_id, model, batch_id), tally in groups.items():
        for view in (total, buckets[index], by_key[api_key_id], by_model[model], by_batch[batch_id]):
            view.merge(tally)
    prefixes = _key_prefixes(session, set(by_key))
    return UsageSummary(
        account_id=account_id,
        start=start,
        end=end,
        bucket_width=bucket_width,
        currency=currency,
        buckets=tuple(
            UsageBucket(bucket_start, min(bucket_start + width, end), tally.totals())
            for bucket_start, tally in zip(starts, buckets, strict=True)
        ),
        totals=total.totals(),
        by_api_key=_breakdown(by_key, lambda api_key_id: prefixes[api_key_id]),
        by_model=_breakdown(by_model, str),
        by_batch=_breakdown(by_batch, str),
    )


def _key_prefixes(session: Session, api_key_ids: set[str]) -> dict[str, str]:
    if not api_key_ids:
        return {}
    return dict(session.execute(sa.select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(api_key_ids))).all())


def _breakdown(tallies: dict[str, UsageTally], label_of: Callable[[str], str]) -> tuple[BreakdownRow, ...]:
    rows = [BreakdownRow(key, label_of(key), tally.totals()) for key, tally in tallies.items()]
    return tuple(sorted(rows, key=lambda row: (-row.totals.cost, -row.totals.total_tokens, row.key)))

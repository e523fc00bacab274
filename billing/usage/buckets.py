"""Usage buckets for ``GET /v1/usage``, shaped after OpenAI's organization usage API.

Buckets of ``bucket_width`` (``1h`` or ``1d``) start at ``start_time`` and cover
``[start_time, end_time)``; each holds one result per group (``api_key``, ``model``, ``batch``
in any combination) with the token classes, the request count and the cost. The cost of a
bucket is the sum of its requests' marginal costs as the ledger recorded them (what their output
lines' ``x_billing`` say); the month's invoice is authoritative. Pages hold ``limit`` buckets; ``next_page`` is the
cursor of the next one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import decimal_string
from billing.pricing.schedule_store import price_book
from billing.usage.tally import UsageTally
from hybatch.errors import HybatchError, InvalidRequestError
from hybatch.models import UsageRecord, utc_now

BUCKET_WIDTHS = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
DEFAULT_LIMITS = {"1h": 24, "1d": 7}
MAX_LIMITS = {"1h": 168, "1d": 31}
GROUP_FIELDS = {"api_key": "api_key_id", "api_key_id": "api_key_id", "model": "model", "batch": "batch"}
RESULT_OBJECT = "organization.usage.completions.result"


@dataclass(frozen=True)
class UsageQuery:
    account_id: str
    start: datetime
    end: datetime
    bucket_width: str
    group_by: tuple[str, ...]  # result field names: api_key_id, model, batch
    limit: int


def build_query(
    account_id: str,
    *,
    start_time: int,
    end_time: int | None,
    bucket_width: str,
    group_by: list[str],
    limit: int | None,
    page: str | None,
    now: datetime | None = None,
) -> UsageQuery:
    """Check the request parameters (every one names its ``param`` when wrong)."""
    if bucket_width not in BUCKET_WIDTHS:
        raise InvalidRequestError(
            "bucket_width must be one of 1h, 1d", code="invalid_value", param="bucket_width"
        )
    names = [name for value in group_by for name in value.split(",") if name]
    unknown = [name for name in names if name not in GROUP_FIELDS]
    if unknown:
        raise InvalidRequestError(
            f"group_by accepts api_key, model, batch; got {', '.join(unknown)}",
            code="invalid_value",
            param="group_by",
        )
    fields = tuple(dict.fromkeys(GROUP_FIELDS[name] for name in names))
    limit = DEFAULT_LIMITS[bucket_width] if limit is None else limit
    if not 1 <= limit <= MAX_LIMITS[bucket_width]:
        raise InvalidRequestError(
            f"limit must be between 1 and {MAX_LIMITS[bucket_width]} for {bucket_width} buckets",
            code="invalid_value",
            param="limit",
        )
    start = datetime.fromtimestamp(start_time, UTC)
    end = datetime.fromtimestamp(end_time, UTC) if end_time is not None else (now or utc_now())
    if end <= start:
        raise InvalidRequestError("end_time must be after start_time", code="invalid_value", param="end_time")
    if page is not None:
        try:
            page_start = datetime.fromtimestamp(int(page), UTC)
        except (ValueError, OverflowError, OSError) as error:
            raise InvalidRequestError(
                "page is not a cursor from next_page", code="invalid_value", param="page"
            ) from error
        width = BUCKET_WIDTHS[bucket_width]
        if not start <= page_start < end or (page_start - start) % width:
            raise InvalidRequestError(
                "page is not a cursor from next_page", code="invalid_value", param="page"
            )
        start_of_page = page_start
    else:
        start_of_page = start
    return UsageQuery(account_id, start_of_page, end, bucket_width, fields, limit)


class RequestUsage(NamedTuple):
    """One usage record with the cost it was recorded at (None: unpriced).

    A named tuple: a month's summary reads thousands, and a tuple is built four times faster.
    """

    usage_record_id: int
    created_at: datetime
    api_key_id: str
    model: str
    batch_id: str
    cache_hit_input_tokens: int
    cache_miss_input_tokens: int
    output_tokens: int
    amount: Decimal | None  # marginal cost of the request, unrounded major units
    currency: str | None


def cost_columns() -> tuple[sa.ColumnElement[Decimal], sa.ColumnElement[str]]:
    """A usage record's cost as recorded (its line's ``x_billing``) and currency; NULL if unpriced."""
    return UsageRecord.amount, UsageRecord.currency


def usage_rows(session: Session, account_id: str, start: datetime, end: datetime) -> list[RequestUsage]:
    """The account's usage records created in ``[start, end)``, each with its line's cost (reads only).

    ``GET /v1/usage`` and the dashboard's summary both count from this one query.
    """
    query = sa.select(
        UsageRecord.id,
        UsageRecord.created_at,
        UsageRecord.api_key_id,
        UsageRecord.model,
        UsageRecord.batch_id,
        UsageRecord.cache_hit_input_tokens,
        UsageRecord.cache_miss_input_tokens,
        UsageRecord.output_tokens,
        *cost_columns(),
    )
    rows = session.execute(
        query.where(
            UsageRecord.account_id == account_id,
            UsageRecord.created_at >= start,
            UsageRecord.created_at < end,
        )
    )
    # the columns are selected in RequestUsage's field order
    return [RequestUsage(*row) for row in rows]


def bucket_starts(
    start: datetime, end: datetime, width: timedelta, limit: int | None = None
) -> list[datetime]:
    """``start + k * width`` for every bucket that begins before ``end`` (at most ``limit`` of them)."""
    starts = []
    moment = start
    while moment < end and (limit is None or len(starts) < limit):
        starts.append(moment)
        moment += width
    return starts


def bucket_index(created_at: datetime, start: datetime, width: timedelta) -> int:
    """Which bucket (0-based, from ``start``) holds a record created at ``created_at``."""
    return (created_at - start) // width


def usage_page(session: Session, query: UsageQuery) -> dict[str, Any]:
    """One page of buckets, OpenAI-shaped: ``{object: page, data, has_more, next_page}``."""
    width = BUCKET_WIDTHS[query.bucket_width]
    starts = bucket_starts(query.start, query.end, width, limit=query.limit)
    moment = starts[-1] + width  # the start of the page after this one
    page_end = min(moment, query.end)
    has_more = moment < query.end
    rows = usage_rows(session, query.account_id, query.start, page_end)
    buckets: dict[int, dict[tuple, UsageTally]] = defaultdict(lambda: defaultdict(UsageTally))
    for row in rows:
        index = bucket_index(row.created_at, query.start, width)
        values = {"api_key_id": row.api_key_id, "model": row.model, "batch": row.batch_id}
        group = tuple(values[name] for name in query.group_by)
        buckets[index][group].add(row, None)
    default_currency = account_currency(session, query.account_id, utc_now())
    data = []
    for index, bucket_start in enumerate(starts):
        bucket_end = min(bucket_start + width, query.end)
        results = [
            _result(tally, dict(zip(query.group_by, group, strict=True)), default_currency)
            for group, tally in sorted(
                buckets.get(index, {}).items(), key=lambda item: tuple(map(str, item[0]))
            )
        ]
        data.append(
            {
                "object": "bucket",
                "start_time": int(bucket_start.timestamp()),
                "end_time": int(bucket_end.timestamp()),
                "results": results,
            }
        )
    return {
        "object": "page",
        "data": data,
        "has_more": has_more,
        "next_page": str(int(moment.timestamp())) if has_more else None,
    }


def account_currency(session: Session, account_id: str, at: datetime) -> str:
    """The currency of the account's schedule version at ``at`` (``usd`` when none is in effect)."""
    book = price_book(session, account_id)
    try:
        return book.at(at).currency
    except HybatchError:
        return "usd"


def _result(tally: UsageTally, group: dict[str, str], default_currency: str) -> dict[str, Any]:
    return {
        "object": RESULT_OBJECT,
        "input_tokens": tally.hit + tally.miss,
        "input_cached_tokens": tally.hit,
        "output_tokens": tally.output,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": tally.requests,
        "project_id": None,
        "user_id": None,
        "api_key_id": group.get("api_key_id"),
        "model": group.get("model"),
        "batch": group.get("batch"),
        "cache_hit_input_tokens": tally.hit,
        "cache_miss_input_tokens": tally.miss,
        "amount": {"value": decimal_string(tally.cost), "currency": tally.currency or default_currency},
        "unpriced_requests": tally.unpriced,
    }

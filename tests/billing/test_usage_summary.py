"""The dashboard's usage summary: equal to GET /v1/usage, breakdowns, hit rates, cache savings by hand."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from billing.pricing.request_cost import X_BILLING
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from billing.usage.buckets import MAX_LIMITS, build_query, usage_page
from billing.usage.dashboard_summary import UsageSummary, UsageTotals, summarize_usage
from hybatch.errors import InvalidRequestError
from hybatch.models import BatchRequestResult
from tests.billing.ledger import Customer, add_api_key, add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version

D = Decimal
NOW = at("2026-04-01 00:00")


def _request(session: Session, customer: Customer, when: str, *, amount: str | None = None, **tokens):
    """A recorded request; with ``amount``, it was recorded at that cost (and its line says so)."""
    record = add_usage(session, customer, at(when), **tokens)
    if amount is not None:
        record.amount, record.currency, record.price_version = Decimal(amount), "usd", "v"
        x_billing = {"token_classes": {}, "amount": amount, "currency": "usd", "price_version": "v"}
        line = {"id": record.custom_id, "custom_id": record.custom_id, "response": {}, X_BILLING: x_billing}
        session.add(
            BatchRequestResult(batch_id=record.batch_id, custom_id=record.custom_id, line_number=1, line=line)
        )
        session.flush()
    return record


@pytest.fixture
def alice(session: Session) -> tuple[Customer, Customer]:
    """Two keys of one account and four requests in March; bob's usage must never show."""
    first = add_customer(session, "alice")
    second = add_api_key(session, first, "hb-alice-2")
    _request(session, first, "2026-03-01 10:00", amount="0.001", hit=10, miss=6, out=7)
    _request(session, first, "2026-03-01 23:59", amount="0.0025", miss=4, out=1)
    _request(
        session, second, "2026-03-02 05:30", amount="0.004", hit=30, miss=10, out=20, model="mimo-v2.5-pro"
    )
    _request(session, first, "2026-03-03 00:00", hit=1, miss=3, out=3, model="other-model")  # unpriced
    _request(session, first, "2026-03-04 00:00", amount="1", out=1)  # after every range below
    bob = add_customer(session, "bob")
    _request(session, bob, "2026-03-01 12:00", amount="9", hit=100, miss=100, out=100)
    return first, second


def _counts(totals: UsageTotals) -> tuple:
    return (
        totals.requests,
        totals.cache_hit_input_tokens,
        totals.cache_miss_input_tokens,
        totals.output_tokens,
        totals.cost,
        totals.unpriced_requests,
    )


def _page(session: Session, summary: UsageSummary, group_by: list[str]) -> dict:
    query = build_query(
        summary.account_id,
        start_time=int(summary.start.timestamp()),
        end_time=int(summary.end.timestamp()),
        bucket_width=summary.bucket_width,
        group_by=group_by,
        limit=MAX_LIMITS[summary.bucket_width],
        page=None,
    )
    page = usage_page(session, query)
    assert page["has_more"] is False
    return page


def _result_counts(result: dict) -> tuple:
    return (
        result["num_model_requests"],
        result["input_cached_tokens"],
        result["cache_miss_input_tokens"],
        result["output_tokens"],
        D(result["amount"]["value"]),
        result["unpriced_requests"],
    )


def _assert_equals_the_usage_endpoint(session: Session, summary: UsageSummary) -> None:
    page = _page(session, summary, [])
    assert len(page["data"]) == len(summary.buckets)
    for bucket, summary_bucket in zip(page["data"], summary.buckets, strict=True):
        assert (bucket["start_time"], bucket["end_time"]) == (
            int(summary_bucket.start.timestamp()),
            int(summary_bucket.end.timestamp()),
        )
        expected = [_result_counts(result) for result in bucket["results"]] or [(0, 0, 0, 0, D(0), 0)]
        assert expected == [_counts(summary_bucket.totals)]
        for result in bucket["results"]:
            assert result["amount"]["currency"] == summary.currency
            assert result["input_tokens"] == summary_bucket.totals.input_tokens
    for group, rows in [
        ("api_key", summary.by_api_key),
        ("model", summary.by_model),
        ("batch", summary.by_batch),
    ]:
        field = "api_key_id" if group == "api_key" else group
        over_buckets: dict[str, list[int | Decimal]] = defaultdict(lambda: [0, 0, 0, 0, D(0), 0])
        for bucket in _page(session, summary, [group])["data"]:
            for result in bucket["results"]:
                sums = over_buckets[result[field]]
                sums[:] = [a + b for a, b in zip(sums, _result_counts(result), strict=True)]
        assert {row.key: _counts(row.totals) for row in rows} == {
            key: tuple(sums) for key, sums in over_buckets.items()
        }


def test_daily_summary_by_hand_and_equal_to_the_usage_endpoint(session: Session, alice) -> None:
    first, second = alice
    summary = summarize_usage(
        session,
        first.account_id,
        start=at("2026-03-01 00:00"),
        end=at("2026-03-03 12:00"),
        bucket_width="1d",
        now=NOW,
    )
    assert (summary.currency, summary.bucket_width) == ("usd", "1d")
    assert [(b.start, b.end) for b in summary.buckets] == [
        (at("2026-03-01 00:00"), at("2026-03-02 00:00")),
        (at("2026-03-02 00:00"), at("2026-03-03 00:00")),
        (at("2026-03-03 00:00"), at("2026-03-03 12:00")),  # the last bucket is cut at end
    ]
    # (requests, hit, miss, output, cost, unpriced)
    assert [_counts(b.totals) for b in summary.buckets] == [
        (2, 10, 10, 8, D("0.0035"), 0),
        (1, 30, 10, 20, D("0.004"), 0),
        (1, 1, 3, 3, D("0"), 1),
    ]
    assert [b.totals.hit_rate for b in summary.buckets] == [D("0.5"), D("0.75"), D("0.25")]
    totals = summary.totals
    assert _counts(totals) == (4, 41, 23, 31, D("0.0075"), 1)
    assert (totals.input_tokens, totals.total_tokens, totals.hit_rate) == (64, 95, D("0.640625"))  # 41/64
    # default schedule, no tier reached: each hit token saves (miss - hit price) per 1M tokens
    # "*": 0.70 - 0.07 = 0.63; mimo-v2.5-pro: 2.00 - 0.20 = 1.80
    # 10 * 0.63 + 30 * 1.80 + 1 * 0.63 = 6.3 + 54 + 0.63 = 60.93 per 1M
    assert totals.saved_by_cache == D("0.00006093")
    assert [b.totals.saved_by_cache for b in summary.buckets] == [
        D("0.0000063"),
        D("0.000054"),
        D("0.00000063"),
    ]

    assert [(r.key, r.label, r.totals.cost, r.totals.requests) for r in summary.by_api_key] == [
        (second.api_key_id, "hb-alice-2", D("0.004"), 1),
        (first.api_key_id, "hb-alice", D("0.0035"), 3),
    ]
    assert [(r.key, r.label, r.totals.cost) for r in summary.by_model] == [
        ("mimo-v2.5-pro", "mimo-v2.5-pro", D("0.004")),
        ("tiny-test", "tiny-test", D("0.0035")),
        ("other-model", "other-model", D("0")),
    ]
    assert [(r.key, r.label, r.totals.total_tokens) for r in summary.by_batch] == [
        (second.batch_id, second.batch_id, 60),
        (first.batch_id, first.batch_id, 35),
    ]
    _assert_equals_the_usage_endpoint(session, summary)


def test_hourly_summary_equal_to_the_usage_endpoint(session: Session, alice) -> None:
    first, _ = alice
    start, end = at("2026-03-01 00:00"), at("2026-03-03 00:30")
    summary = summarize_usage(session, first.account_id, start=start, end=end, bucket_width="1h", now=NOW)
    assert len(summary.buckets) == 49 and summary.buckets[-1].end == end
    busy = {index: b.totals.requests for index, b in enumerate(summary.buckets) if b.totals.requests}
    assert busy == {10: 1, 23: 1, 29: 1, 48: 1}  # 03-01 10:00, 23:59, 03-02 05:30, 03-03 00:00
    assert summary.buckets[0].totals.hit_rate is None  # no input tokens
    assert summary.buckets[23].totals.hit_rate == D("0")
    _assert_equals_the_usage_endpoint(session, summary)


def test_breakdowns_sort_by_cost_then_tokens_then_key(session: Session) -> None:
    customer = add_customer(session)
    _request(session, customer, "2026-03-01 01:00", miss=5, out=5, model="m-b")  # 10 tokens, unpriced
    _request(session, customer, "2026-03-01 02:00", miss=4, out=6, model="m-a")  # 10 tokens, unpriced
    _request(session, customer, "2026-03-01 03:00", miss=10, out=10, model="m-c")  # 20 tokens, unpriced
    _request(session, customer, "2026-03-01 04:00", amount="0.000001", out=1, model="m-z")
    summary = summarize_usage(
        session,
        customer.account_id,
        start=at("2026-03-01 00:00"),
        end=at("2026-03-02 00:00"),
        bucket_width="1d",
    )
    assert [row.key for row in summary.by_model] == ["m-z", "m-c", "m-a", "m-b"]
    assert summary.totals.unpriced_requests == 3 and summary.totals.hit_rate == D("0")


def _graduated_misses(session: Session) -> Customer:
    """Schedule ``test``: model m only; misses 2 per 1M up to 1,000 a month, 1 per 1M beyond."""
    prices = {
        "cache_hit_input": flat("0.2"),
        "cache_miss_input": table("graduated", (1000, "2"), (None, "1")),
        "output": flat("4"),
    }
    load_schedule(
        session, parse_schedule(schedule("test", version("v1", "2026-01-01", [model_entry("m", prices)])))
    )
    customer = add_customer(session)
    assign_schedule(session, customer.account_id, "test", at("2026-01-01 00:00"))
    for when, hit, miss, out in [
        ("2026-03-05 09:00", 0, 600, 0),  # A, before the range
        ("2026-03-12 09:00", 500, 100, 10),  # B
        ("2026-03-15 09:00", 0, 400, 0),  # C
        ("2026-03-25 09:00", 200, 0, 0),  # D, after the range
    ]:
        add_usage(session, customer, at(when), hit=hit, miss=miss, out=out, model="m")
    return customer


# Misses, as recorded (ledger order): A (0,600] B (600,700] C (700,1100], crossing 1,000.
# Without the cache:                  A (0,600] B (600,1200], crossing 1,000, C (1200,1600] D (1600,1800].
# Per record, per 1M tokens (without cache - as recorded):
#   A: 600*2 - 600*2                                  = 0
#   B: (400*2 + 200*1) - (100*2 + 500*0.2) = 1000 - 300 = 700
#   C: 400*1 - (300*2 + 100*1)             = 400 - 700  = -300 (B's misses pushed C past the tier edge)
#   D: 200*1 - 200*0.2                     = 200 - 40   = 160
# Month: 560 = invoice without cache (1000*2 + 800*1 = 2800) - as recorded (1000*2 + 100*1 + 700*0.2 = 2240).
SAVED_B, SAVED_C, SAVED_D = D("0.0007"), D("-0.0003"), D("0.00016")


def test_saved_by_cache_follows_the_months_graduated_tiers(session: Session) -> None:
    customer = _graduated_misses(session)
    summary = summarize_usage(
        session,
        customer.account_id,
        start=at("2026-03-10 00:00"),
        end=at("2026-03-20 00:00"),
        bucket_width="1d",
    )
    saved = {b.start.day: b.totals.saved_by_cache for b in summary.buckets if b.totals.requests}
    assert saved == {12: SAVED_B, 15: SAVED_C}
    assert summary.totals.saved_by_cache == D("0.0004")  # B + C; A and D only move the tiers
    assert summary.buckets[0].totals.saved_by_cache == D("0")
    whole_month = summarize_usage(
        session,
        customer.account_id,
        start=at("2026-03-01 00:00"),
        end=at("2026-04-01 00:00"),
        bucket_width="1d",
    )
    assert whole_month.totals.saved_by_cache == D("0.00056")


def test_saved_by_cache_is_unknown_for_a_month_that_cannot_be_rated(session: Session) -> None:
    customer = _graduated_misses(session)
    add_usage(session, customer, at("2026-04-02 09:00"), hit=5, miss=5, model="x")  # schedule test has no x
    summary = summarize_usage(
        session,
        customer.account_id,
        start=at("2026-03-10 00:00"),
        end=at("2026-04-10 00:00"),
        bucket_width="1d",
    )
    assert summary.totals.saved_by_cache is None
    by_day = {b.start: b.totals.saved_by_cache for b in summary.buckets if b.totals.requests}
    assert by_day == {
        at("2026-03-12 00:00"): SAVED_B,
        at("2026-03-15 00:00"): SAVED_C,
        at("2026-03-25 00:00"): SAVED_D,
        at("2026-04-02 00:00"): None,  # April cannot be rated; March still can
    }
    assert {row.key: row.totals.saved_by_cache for row in summary.by_model} == {"m": D("0.00056"), "x": None}
    assert summary.totals.cache_hit_input_tokens == 500 + 200 + 5  # B, D and x: the tokens still count


@pytest.mark.parametrize(
    ("start", "end", "width", "param"),
    [
        ("2026-03-01 00:00", "2026-03-02 00:00", "1w", "bucket_width"),
        ("2026-03-01 00:00", "2026-03-01 00:00", "1h", "end"),
        ("2026-03-01 00:00", "2026-04-12 00:00", "1h", "end"),  # 1,008 hourly buckets
    ],
)
def test_bad_ranges_name_their_parameter(
    session: Session, start: str, end: str, width: str, param: str
) -> None:
    customer = add_customer(session)
    with pytest.raises(InvalidRequestError) as raised:
        summarize_usage(session, customer.account_id, start=at(start), end=at(end), bucket_width=width)
    assert raised.value.param == param


def test_an_empty_range_has_zero_totals(session: Session) -> None:
    customer = add_customer(session)
    start: datetime = at("2026-03-01 00:00")
    summary = summarize_usage(
        session, customer.account_id, start=start, end=at("2026-03-01 03:00"), bucket_width="1h"
    )
    assert len(summary.buckets) == 3 and summary.by_model == () and summary.currency == "usd"
    assert summary.totals == UsageTotals(0, 0, 0, 0, D("0"), 0, D("0"))
    assert summary.totals.hit_rate is None


def test_usage_by_account_equals_each_accounts_summary(session) -> None:
    from datetime import UTC, datetime, timedelta

    from billing.sample_ledger import write_sample_ledger
    from billing.usage.by_account import usage_by_account
    from billing.usage.dashboard_summary import summarize_usage
    from hybatch.models import Account

    start = datetime(2026, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=5)
    write_sample_ledger(
        session, account_name="one", num_requests=90, start=start, end=end, requests_per_batch=30, seed=5
    )
    write_sample_ledger(
        session, account_name="two", num_requests=40, start=start - timedelta(days=2), end=end, seed=6
    )
    session.add(Account(name="idle"))
    session.flush()
    window = (start + timedelta(days=1), end)
    overview = usage_by_account(session, *window)
    assert [row.account_name for row in overview][-1] == "idle"
    for row in overview:
        summary = summarize_usage(session, row.account_id, start=window[0], end=window[1], bucket_width="1d")
        expected = summary.totals
        assert (
            row.totals.requests,
            row.totals.cache_hit_input_tokens,
            row.totals.cache_miss_input_tokens,
        ) == (
            expected.requests,
            expected.cache_hit_input_tokens,
            expected.cache_miss_input_tokens,
        )
        assert (row.totals.output_tokens, row.totals.cost) == (expected.output_tokens, expected.cost)
        assert row.totals.saved_by_cache is None and row.currency == summary.currency
    assert sum(row.totals.requests for row in overview) > 0

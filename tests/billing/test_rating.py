"""Rating by hand-computed tables: tier edges, graduated vs volume, schedule changes, rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import round_to_minor
from billing.pricing.rating import UsageRow, line_drafts, rate_month
from billing.pricing.schedule_version import ChargeKey, Tier, TierMode, TierSlice, TierTable, TokenClass
from tests.billing.books import book_of, one_version
from tests.billing.ledger import at
from tests.billing.schedule_docs import flat, model_entry, table, version

D = Decimal
M = 1_000_000
GRADUATED = table("graduated", (1 * M, "2.00"), (3 * M, "1.50"), (None, "1.00"))
VOLUME = table("volume", (1 * M, "2.00"), (3 * M, "1.50"), (None, "1.00"))

_ids = iter(range(1, 10_000))


def row(when: str, *, out: int = 0, hit: int = 0, miss: int = 0, model: str = "m", prompt: int | None = None):
    return UsageRow(
        usage_record_id=next(_ids),
        created_at=at(when),
        model=model,
        prompt_tokens=hit + miss if prompt is None else prompt,
        tokens={TokenClass.CACHE_HIT_INPUT: hit, TokenClass.CACHE_MISS_INPUT: miss, TokenClass.OUTPUT: out},
    )


def lines(rows, book, **kwargs):
    drafts = line_drafts(rate_month(rows, book, origin_period="2026-03", **kwargs))
    return [
        (
            d.key.price_version,
            d.key.model,
            d.key.token_class.value,
            d.key.context_tier,
            d.key.tier_number,
            d.tokens,
            d.amount,
            d.amount_minor,
        )
        for d in drafts
    ]


def test_tier_slices_at_the_edges() -> None:
    graduated = TierTable(TierMode.GRADUATED, (Tier(1000, D("2")), Tier(3000, D("1")), Tier(None, D("0.5"))))
    assert graduated.slices(0, 1000, 0) == [TierSlice(1, 1000, D("2"))]  # exactly on up_to: still tier 1
    assert graduated.slices(1000, 1, 0) == [TierSlice(2, 1, D("1"))]  # unit 1001 is tier 2
    assert graduated.slices(999, 2002, 0) == [
        TierSlice(1, 1, D("2")),
        TierSlice(2, 2000, D("1")),
        TierSlice(3, 1, D("0.5")),
    ]
    assert graduated.slices(5000, 10, 0) == [TierSlice(3, 10, D("0.5"))]
    assert graduated.slices(5, 0, 0) == []
    volume = TierTable(TierMode.VOLUME, graduated.tiers)
    assert volume.slices(0, 10, 1000) == [TierSlice(1, 10, D("2"))]  # month total exactly on up_to
    assert volume.slices(0, 10, 1001) == [TierSlice(2, 10, D("1"))]
    assert volume.slices(990, 10, 3001) == [TierSlice(3, 10, D("0.5"))]


def test_graduated_month_crossing_tiers() -> None:
    # 600k + 400k lands exactly on the 1M edge; 2.5M then crosses tier 2 into tier 3.
    rows = [
        row("2026-03-02 10:00", out=600_000),
        row("2026-03-09 10:00", out=400_000),
        row("2026-03-20 10:00", out=2_500_000),
    ]
    assert lines(rows, book_of(one_version(GRADUATED))) == [
        ("default@v1", "m", "output", "short", 1, 1_000_000, D("2.00"), 200),
        ("default@v1", "m", "output", "short", 2, 2_000_000, D("3.00"), 300),
        ("default@v1", "m", "output", "short", 3, 500_000, D("0.50"), 50),
    ]


@pytest.mark.parametrize(
    ("outputs", "tier", "amount"),
    [
        ([600_000, 400_000], 1, D("2.00")),  # month total exactly 1M: every token at tier 1
        ([600_000, 400_001], 2, D("1.5000015")),  # one token more: every token at tier 2
        ([1_000_000, 2_500_000], 3, D("3.50")),
    ],
)
def test_volume_month_prices_every_token_at_the_total_tier(outputs, tier, amount) -> None:
    rows = [row(f"2026-03-{i + 2:02d} 10:00", out=n) for i, n in enumerate(outputs)]
    ((*_, tier_number, tokens, line_amount, minor),) = lines(rows, book_of(one_version(VOLUME)))
    assert (tier_number, tokens, line_amount, minor) == (
        tier,
        sum(outputs),
        amount,
        round_to_minor(amount, "usd"),
    )


def test_volume_before_continues_a_billed_month() -> None:
    rows = [row("2026-03-30 10:00", out=500_000)]
    charge_volume = {ChargeKey("m", TokenClass.OUTPUT, "short"): 800_000}
    assert lines(rows, book_of(one_version(GRADUATED)), volume_before=charge_volume) == [
        ("default@v1", "m", "output", "short", 1, 200_000, D("0.40"), 40),
        ("default@v1", "m", "output", "short", 2, 300_000, D("0.45"), 45),
    ]
    assert lines(rows, book_of(one_version(VOLUME)), volume_before=charge_volume) == [
        ("default@v1", "m", "output", "short", 2, 500_000, D("0.75"), 75),
    ]


def test_schedule_change_mid_month_keeps_tier_progress() -> None:
    v1 = one_version(table("graduated", (1 * M, "2"), (None, "1")), "v1", "2026-01-01")
    v2 = one_version(table("graduated", (1 * M, "3"), (None, "1.5")), "v2", "2026-03-15")
    rows = [row("2026-03-10 10:00", out=800_000), row("2026-03-20 10:00", out=400_000)]
    assert lines(rows, book_of(v1, v2)) == [
        ("default@v1", "m", "output", "short", 1, 800_000, D("1.6"), 160),
        ("default@v2", "m", "output", "short", 1, 200_000, D("0.6"), 60),
        ("default@v2", "m", "output", "short", 2, 200_000, D("0.3"), 30),
    ]


def test_models_classes_and_context_tiers() -> None:
    prices = {
        "short": {"cache_hit_input": flat("0.10"), "cache_miss_input": flat("1.00"), "output": flat("3.00")},
        "long": {"cache_hit_input": flat("0.20"), "cache_miss_input": flat("2.00"), "output": flat("6.00")},
    }
    pro = {c: flat("10") for c in ("cache_hit_input", "cache_miss_input", "output")}
    book = book_of(
        version("v1", "2026-01-01", [model_entry("pro", pro), model_entry("*", prices)], long_from=1000)
    )
    rows = [
        row("2026-03-01 00:00", hit=600, miss=400, out=50),  # prompt exactly 1000: short
        row("2026-03-01 00:01", hit=601, miss=400, out=50),  # prompt 1001: long
        row("2026-03-01 00:02", miss=1000, out=1000, model="pro"),
    ]
    assert lines(rows, book) == [
        ("default@v1", "m", "cache_hit_input", "long", 1, 601, D("0.0001202"), 0),
        ("default@v1", "m", "cache_miss_input", "long", 1, 400, D("0.0008"), 0),
        ("default@v1", "m", "output", "long", 1, 50, D("0.0003"), 0),
        ("default@v1", "m", "cache_hit_input", "short", 1, 600, D("0.00006"), 0),
        ("default@v1", "m", "cache_miss_input", "short", 1, 400, D("0.0004"), 0),
        ("default@v1", "m", "output", "short", 1, 50, D("0.00015"), 0),
        ("default@v1", "pro", "cache_miss_input", "short", 1, 1000, D("0.01"), 1),
        ("default@v1", "pro", "output", "short", 1, 1000, D("0.01"), 1),
    ]


def test_rounding_happens_once_per_line_half_up() -> None:
    book = book_of(one_version(flat("0.07")))
    # 71,428 tokens at 0.07/1M = 0.00499996 -> 0 cents; 71,429 -> 0.00500003 -> 1 cent
    assert lines([row("2026-03-01 00:00", hit=71_428)], book)[0][-2:] == (D("0.00499996"), 0)
    assert lines([row("2026-03-01 00:00", hit=71_429)], book)[0][-2:] == (D("0.00500003"), 1)
    # half a cent exactly rounds up
    half = book_of(one_version(flat("5")))
    assert lines([row("2026-03-01 00:00", out=1_000)], half)[0][-2:] == (D("0.005"), 1)
    # two requests of 0.4 cents each: per-request rounding would bill 0, the line bills 1 cent
    two = [row("2026-03-01 00:00", out=800), row("2026-03-01 00:01", out=800)]
    assert lines(two, half)[0][-3:] == (1600, D("0.008"), 1)
    assert round_to_minor(D("12.345"), "jpy") == 12 and round_to_minor(D("12.5"), "jpy") == 13


def test_zero_token_classes_make_no_lines() -> None:
    assert lines([row("2026-03-01 00:00", out=0, hit=0, miss=0)], book_of(one_version(GRADUATED))) == []

"""The price sheet: the schedule version in force, as readable rows (values read by hand from the files)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from billing.pricing.price_sheet import PriceTierRow, price_sheet
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import NoScheduleInEffectError, assign_schedule, load_schedule
from billing.pricing.schedule_version import TierMode, TokenClass
from tests.billing.ledger import add_customer, at
from tests.billing.schedule_docs import CLASSES, flat, model_entry, schedule, table, version

D = Decimal
B = 1_000_000_000
UPTO, OVER = (0, 262_144), (262_144, None)
HIT, MISS, OUT = TokenClass.CACHE_HIT_INPUT, TokenClass.CACHE_MISS_INPUT, TokenClass.OUTPUT
VOLUME, GRADUATED = TierMode.VOLUME, TierMode.GRADUATED

# billing/pricing/default_schedule.yaml, version 2025-01: (model, context tier, prompt range, class, mode,
# price up to 1B tokens a month, price beyond), per 1M tokens
DEFAULT_ROWS = [
    ("mimo-v2.5-pro", "upto_256k", UPTO, HIT, VOLUME, "0.20", "0.17"),
    ("mimo-v2.5-pro", "upto_256k", UPTO, MISS, VOLUME, "2.00", "1.70"),
    ("mimo-v2.5-pro", "upto_256k", UPTO, OUT, VOLUME, "6.00", "5.10"),
    ("mimo-v2.5-pro", "over_256k", OVER, HIT, VOLUME, "0.40", "0.34"),
    ("mimo-v2.5-pro", "over_256k", OVER, MISS, VOLUME, "4.00", "3.40"),
    ("mimo-v2.5-pro", "over_256k", OVER, OUT, VOLUME, "12.00", "10.20"),
    ("*", "upto_256k", UPTO, HIT, GRADUATED, "0.07", "0.056"),
    ("*", "upto_256k", UPTO, MISS, GRADUATED, "0.70", "0.56"),
    ("*", "upto_256k", UPTO, OUT, GRADUATED, "2.10", "1.68"),
    ("*", "over_256k", OVER, HIT, GRADUATED, "0.14", "0.112"),
    ("*", "over_256k", OVER, MISS, GRADUATED, "1.40", "1.12"),
    ("*", "over_256k", OVER, OUT, GRADUATED, "4.20", "3.36"),
]


def _readable(sheet) -> list[tuple]:
    return [
        (
            row.model,
            row.context_tier,
            (row.prompt_tokens_above, row.prompt_tokens_up_to),
            row.token_class,
            row.mode,
            row.tiers,
        )
        for row in sheet.rows
    ]


def test_the_shipped_default_schedule(session: Session) -> None:
    customer = add_customer(session)
    sheet = price_sheet(session, customer.account_id, at("2026-03-01 00:00"))
    assert (sheet.schedule, sheet.version, sheet.price_version, sheet.currency, sheet.effective_from) == (
        "default",
        "2025-01",
        "default@2025-01",
        "usd",
        at("2025-01-01 00:00"),
    )
    assert _readable(sheet) == [
        (
            model,
            tier,
            prompts,
            token_class,
            mode,
            (PriceTierRow(1, B, D(low)), PriceTierRow(B + 1, None, D(high))),
        )
        for model, tier, prompts, token_class, mode, low, high in DEFAULT_ROWS
    ]


def test_a_custom_schedule_over_time(session: Session) -> None:
    three_tiers = table("graduated", (1000, "3"), (5000, "2.5"), (None, "1"))
    v1 = version(
        "v1",
        "2026-02-01",
        [
            model_entry(
                "pro", {"cache_hit_input": flat("0.5"), "cache_miss_input": flat("5"), "output": three_tiers}
            )
        ],
        long_from=4096,
    )
    v2 = version("v2", "2026-03-15", [model_entry("*", {c: flat("9") for c in CLASSES})])
    load_schedule(session, parse_schedule(schedule("custom", v1, v2)))
    customer = add_customer(session)
    assign_schedule(session, customer.account_id, "custom", at("2026-01-10 00:00"))

    sheet = price_sheet(session, customer.account_id, at("2026-03-14 23:59"))
    assert (sheet.price_version, sheet.currency, sheet.effective_from) == (
        "custom@v1",
        "usd",
        at("2026-02-01 00:00"),
    )
    short, long = (0, 4096), (4096, None)
    assert _readable(sheet) == [
        ("pro", "short", short, HIT, GRADUATED, (PriceTierRow(1, None, D("0.5")),)),
        ("pro", "short", short, MISS, GRADUATED, (PriceTierRow(1, None, D("5")),)),
        (
            "pro",
            "short",
            short,
            OUT,
            GRADUATED,
            (
                PriceTierRow(1, 1000, D("3")),
                PriceTierRow(1001, 5000, D("2.5")),
                PriceTierRow(5001, None, D("1")),
            ),
        ),
        ("pro", "long", long, HIT, GRADUATED, (PriceTierRow(1, None, D("0.5")),)),
        ("pro", "long", long, MISS, GRADUATED, (PriceTierRow(1, None, D("5")),)),
        (
            "pro",
            "long",
            long,
            OUT,
            GRADUATED,
            (
                PriceTierRow(1, 1000, D("3")),
                PriceTierRow(1001, 5000, D("2.5")),
                PriceTierRow(5001, None, D("1")),
            ),
        ),
    ]
    later = price_sheet(session, customer.account_id, at("2026-03-15 00:00"))
    assert later.price_version == "custom@v2" and {row.model for row in later.rows} == {"*"}
    assert [row.tiers for row in later.rows] == [(PriceTierRow(1, None, D("9")),)] * 6
    before = price_sheet(session, customer.account_id, at("2026-01-09 23:59"))
    assert before.price_version == "default@2025-01"  # not assigned yet


def test_no_schedule_in_effect_is_an_error(session: Session) -> None:
    load_schedule(
        session,
        parse_schedule(
            schedule("late", version("v1", "2026-02-01", [model_entry("*", {c: flat("1") for c in CLASSES})]))
        ),
    )
    customer = add_customer(session)
    assign_schedule(session, customer.account_id, "late", at("2026-01-10 00:00"))
    with pytest.raises(NoScheduleInEffectError, match="no version of price schedule 'late'") as raised:
        price_sheet(session, customer.account_id, at("2026-01-20 00:00"))
    assert raised.value.code == "no_price_schedule"
    with pytest.raises(NoScheduleInEffectError, match="'default'"):
        price_sheet(session, customer.account_id, at("2024-12-31 23:59"))

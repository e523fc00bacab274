"""The upcoming invoice: the open period's invoice if closed now, by hand and against the real close."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing.invoices import close_period, invoice_lines, list_invoices
from billing.invoicing.upcoming import upcoming_invoice
from billing.periods import Period
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from billing.pricing.schedule_version import UnpricedModelError
from hybatch.models import BilledUsage
from tests.billing.ledger import Customer, add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version

D = Decimal
M = 1_000_000
FEBRUARY, MARCH = Period(2026, 2), Period(2026, 3)


@pytest.fixture
def acme(session: Session) -> Customer:
    """Schedule ``test`` for model m: hit 0.1, miss 1, output 2 up to 1M a month then 1 (per 1M tokens);
    prompts over 1,000 tokens are "long". February is billed: 600k output tokens."""
    prices = {
        "cache_hit_input": flat("0.1"),
        "cache_miss_input": flat("1"),
        "output": table("graduated", (M, "2"), (None, "1")),
    }
    load_schedule(
        session, parse_schedule(schedule("test", version("v1", "2026-01-01", [model_entry("m", prices)])))
    )
    customer = add_customer(session)
    assign_schedule(session, customer.account_id, "test", at("2026-01-01 00:00"))
    add_usage(session, customer, at("2026-02-10 09:00"), out=600_000, model="m")
    close_period(session, FEBRUARY, now=at("2026-03-01 01:00"))
    return customer


def _march_usage(session: Session, customer: Customer) -> None:
    for when, hit, miss, out in [
        ("2026-02-27 09:00", 0, 0, 600_000),  # late: arrives after February was billed
        ("2026-03-02 09:00", 500, 500, 700_000),
        ("2026-03-20 09:00", 0, 1500, 400_000),  # prompt of 1,500 tokens: long context
        ("2026-03-25 09:00", 0, 0, 500_000),  # short output reaches 1.2M: crosses the 1M edge
    ]:
        add_usage(session, customer, at(when), hit=hit, miss=miss, out=out, model="m")


# (line, origin, adjustment, version, model, class, context, tier, tokens, unit price, amount, minor)
MARCH_PREVIEW = [
    (1, "2026-03", False, "test@v1", "m", "cache_miss_input", "long", 1, 1500, D("1"), D("0.0015"), 0),
    (2, "2026-03", False, "test@v1", "m", "output", "long", 1, 400_000, D("2"), D("0.8"), 80),
    (3, "2026-03", False, "test@v1", "m", "cache_hit_input", "short", 1, 500, D("0.1"), D("0.00005"), 0),
    (4, "2026-03", False, "test@v1", "m", "cache_miss_input", "short", 1, 500, D("1"), D("0.0005"), 0),
    (5, "2026-03", False, "test@v1", "m", "output", "short", 1, M, D("2"), D("2"), 200),
    (6, "2026-03", False, "test@v1", "m", "output", "short", 2, 200_000, D("1"), D("0.2"), 20),
    # the late February tokens continue February's billed 600k: (600k, 1.2M]
    (7, "2026-02", True, "test@v1", "m", "output", "short", 1, 400_000, D("2"), D("0.8"), 80),
    (8, "2026-02", True, "test@v1", "m", "output", "short", 2, 200_000, D("1"), D("0.2"), 20),
]


def _fields(line) -> tuple:
    return (
        line.line_number,
        line.origin_period,
        line.is_adjustment,
        line.price_version,
        line.model,
        line.token_class,
        line.context_tier,
        line.price_tier,
        line.tokens,
        line.unit_price,
        line.amount,
        line.amount_minor,
    )


def test_the_upcoming_invoice_by_hand(session: Session, acme: Customer) -> None:
    _march_usage(session, acme)
    billed_before = session.scalar(sa.select(sa.func.count()).select_from(BilledUsage))
    preview = upcoming_invoice(session, acme.account_id, at("2026-03-31 12:00"))
    assert (preview.period, preview.currency, preview.num_usage_records) == (MARCH, "usd", 4)
    assert [_fields(line) for line in preview.lines] == MARCH_PREVIEW
    assert {line.currency for line in preview.lines} == {"usd"}
    assert preview.total_minor == 80 + 200 + 20 + 80 + 20
    # 0.0015 + 0.8 + 0.00005 + 0.0005 + 2 + 0.2 + 0.8 + 0.2
    assert preview.total_amount == D("4.00205")
    assert session.scalar(sa.select(sa.func.count()).select_from(BilledUsage)) == billed_before  # reads only


def test_usage_after_now_is_not_on_it(session: Session, acme: Customer) -> None:
    _march_usage(session, acme)
    preview = upcoming_invoice(
        session, acme.account_id, at("2026-03-20 09:00")
    )  # the 20th's request: not yet
    assert preview.num_usage_records == 2
    assert [
        (line.context_tier, line.token_class, line.price_tier, line.tokens) for line in preview.lines
    ] == [
        ("short", "cache_hit_input", 1, 500),
        ("short", "cache_miss_input", 1, 500),
        ("short", "output", 1, 700_000),
        ("short", "output", 1, 400_000),  # the late February line
        ("short", "output", 2, 200_000),
    ]
    assert preview.total_minor == 140 + 80 + 20


def test_the_close_stores_exactly_the_preview(session: Session, acme: Customer) -> None:
    _march_usage(session, acme)
    preview = upcoming_invoice(session, acme.account_id, at("2026-03-31 23:59"))
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    (invoice,) = [i for i in list_invoices(session, acme.account_id) if i.period == "2026-03"]
    stored = invoice_lines(session, invoice.id)
    assert [(*_fields(line), line.currency) for line in stored] == [
        (*_fields(line), line.currency) for line in preview.lines
    ]
    assert [_fields(line) for line in stored] == MARCH_PREVIEW
    assert (invoice.total_minor, invoice.total_amount, invoice.currency) == (
        preview.total_minor,
        preview.total_amount,
        preview.currency,
    )
    # once closed, the next period's preview starts empty
    april = upcoming_invoice(session, acme.account_id, at("2026-04-02 00:00"))
    assert (april.period, april.lines, april.total_minor, april.total_amount) == (
        Period(2026, 4),
        (),
        0,
        D(0),
    )


def test_an_account_without_usage_previews_an_empty_invoice(session: Session) -> None:
    customer = add_customer(session)
    preview = upcoming_invoice(session, customer.account_id, at("2026-03-05 00:00"))
    assert (preview.period, preview.currency, preview.lines, preview.total_minor) == (MARCH, "usd", (), 0)


def test_unpriced_usage_raises_as_the_close_would(session: Session, acme: Customer) -> None:
    add_usage(session, acme, at("2026-03-02 09:00"), miss=10, model="not-priced")
    with pytest.raises(UnpricedModelError):
        upcoming_invoice(session, acme.account_id, at("2026-03-03 00:00"))
    with pytest.raises(UnpricedModelError):
        close_period(session, MARCH, now=at("2026-04-01 01:00"))


def test_the_upcoming_invoice_deducts_the_prepaid_credit_as_the_close_will(session: Session, acme) -> None:
    from billing.credits.drawdown import draw_credits
    from billing.credits.grants import grant_credits

    grant_credits(session, acme.account_id, amount=D("1.00"), currency="usd", now=at("2026-03-01 00:00"))
    # By hand: r1 400,000 output at 2 per 1M = 0.80, r2 300,000 = 0.60, of which the grant's 0.20 left
    # pays. Lines: output 700,000 = 1.40 (140); credit 1.00 (100); due 0.40 (40).
    for custom_id, out, drawn, when in (
        ("r1", 400_000, "0.80", "2026-03-02 09:00"),
        ("r2", 300_000, "0.20", "2026-03-03 09:00"),
    ):
        draw_credits(
            session,
            account_id=acme.account_id,
            batch_id=acme.batch_id,
            custom_id=custom_id,
            amount=D(drawn),
            currency="usd",
            at=at(when),
        )
        add_usage(session, acme, at(when), out=out, model="m", custom_id=custom_id)
    preview = upcoming_invoice(session, acme.account_id, at("2026-03-10 00:00"))
    assert (preview.subtotal_minor, preview.credit_minor, preview.total_minor) == (140, 100, 40)
    assert preview.total_amount == D("0.40")
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    march = next(i for i in list_invoices(session, acme.account_id) if i.period == "2026-03")
    assert (march.total_minor, march.total_amount) == (preview.total_minor, preview.total_amount)

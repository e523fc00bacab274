"""Monthly close by hand-computed tables, on SQLite and Postgres: tier edges, models, context tiers,
a schedule change mid-month, per-line rounding, invoice total = ledger, idempotence, late usage."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing.close_schedule import close_previous_month, periods_due
from billing.invoicing.invoices import ImmutableInvoiceError, close_period, invoice_lines, list_invoices
from billing.money import add
from billing.periods import Period
from billing.pricing.request_cost import price_request
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.errors import ConflictError
from hybatch.models import BilledUsage, Invoice, InvoiceLine, InvoiceStatus
from hybatch.result_lines import TokenUsage
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version

D = Decimal
M = 1_000_000
MARCH, APRIL = Period(2026, 3), Period(2026, 4)


def _test_schedule(session: Session) -> None:
    """test@v1 from Jan, test@v2 from 15 March (dearer first output tier for "*", short prompts)."""
    pro = {
        "cache_hit_input": flat("1"),
        "cache_miss_input": flat("4"),
        "output": table("volume", (M, "10"), (None, "8")),
    }
    short_v1 = {
        "cache_hit_input": flat("0.1"),
        "cache_miss_input": flat("1"),
        "output": table("graduated", (M, "2"), (3 * M, "1.5"), (None, "1")),
    }
    long = {
        "cache_hit_input": flat("0.2"),
        "cache_miss_input": flat("2"),
        "output": table("graduated", (M, "4"), (None, "3")),
    }
    short_v2 = {**short_v1, "output": table("graduated", (M, "3"), (None, "2"))}
    v1 = version(
        "v1", "2026-01-01", [model_entry("pro", pro), model_entry("*", {"short": short_v1, "long": long})]
    )
    v2 = version(
        "v2", "2026-03-15", [model_entry("pro", pro), model_entry("*", {"short": short_v2, "long": long})]
    )
    load_schedule(session, parse_schedule(schedule("test", v1, v2)))


def _customer(session: Session, name: str = "acme"):
    customer = add_customer(session, name)
    assign_schedule(session, customer.account_id, "test", at("2026-01-01 00:00"))
    return customer


def _lines(session: Session, invoice_id: str) -> list[tuple]:
    return [
        (
            line.origin_period,
            line.is_adjustment,
            line.price_version,
            line.model,
            line.context_tier,
            line.token_class,
            line.price_tier,
            line.tokens,
            line.unit_price,
            line.amount,
            line.amount_minor,
        )
        for line in invoice_lines(session, invoice_id)
    ]


MARCH_LINES = [
    ("2026-03", False, "test@v1", "m", "long", "cache_miss_input", 1, 1001, D("2"), D("0.002002"), 0),
    ("2026-03", False, "test@v1", "m", "long", "output", 1, 100_000, D("4"), D("0.4"), 40),
    ("2026-03", False, "test@v1", "m", "short", "cache_hit_input", 1, 700, D("0.1"), D("0.00007"), 0),
    ("2026-03", False, "test@v1", "m", "short", "cache_miss_input", 1, 800, D("1"), D("0.0008"), 0),
    ("2026-03", False, "test@v1", "m", "short", "output", 1, M, D("2"), D("2"), 200),
    ("2026-03", False, "test@v2", "m", "short", "cache_miss_input", 1, 100, D("1"), D("0.0001"), 0),
    ("2026-03", False, "test@v2", "m", "short", "output", 2, 500_000, D("2"), D("1"), 100),  # tier 2 kept
    ("2026-03", False, "test@v2", "pro", "short", "cache_miss_input", 1, 1010, D("4"), D("0.00404"), 0),
    ("2026-03", False, "test@v2", "pro", "short", "output", 2, M + 1, D("8"), D("8.000008"), 800),  # volume
]


@pytest.fixture
def acme(session: Session):
    _test_schedule(session)
    return _customer(session)


def _usage(session, customer, when, **tokens):
    tokens.setdefault("model", "m")
    return add_usage(session, customer, at(when), **tokens)


def test_march_invoice_by_hand(session: Session, acme) -> None:
    for when, tokens in [
        ("2026-03-02 09:00", {"hit": 500, "miss": 500, "out": 600_000}),
        ("2026-03-05 09:00", {"miss": 1001, "out": 100_000}),
        ("2026-03-10 09:00", {"hit": 200, "miss": 300, "out": 400_000}),
        ("2026-03-20 09:00", {"miss": 100, "out": 500_000}),
        ("2026-03-21 09:00", {"miss": 1000, "out": M, "model": "pro"}),
        ("2026-03-25 09:00", {"miss": 10, "out": 1, "model": "pro"}),
    ]:
        _usage(session, acme, when, **tokens)
    _usage(session, acme, "2026-04-01 00:00", out=5)  # April: not on March's invoice
    other = _customer(session, "other")
    result = close_period(session, MARCH, now=at("2026-04-02 00:00"))
    session.commit()
    assert not result.already_closed and len(result.invoice_ids) == 1  # "other" has no usage
    (invoice,) = list_invoices(session, acme.account_id)
    assert list_invoices(session, other.account_id) == []
    assert (invoice.period, invoice.currency, invoice.status) == ("2026-03", "usd", InvoiceStatus.OPEN)
    assert _lines(session, invoice.id) == MARCH_LINES
    lines = invoice_lines(session, invoice.id)
    # rounded once per line: 40 + 200 + 100 + 800; the exact ledger total would round to 1141
    assert invoice.total_minor == sum(line.amount_minor for line in lines) == 1140
    assert invoice.total_amount == add(*(line.amount for line in lines)) == D("11.40702")
    assert session.scalar(sa.select(sa.func.count()).select_from(BilledUsage)) == 6


def test_close_is_idempotent_and_ordered(session: Session, acme) -> None:
    _usage(session, acme, "2026-03-02 09:00", out=600_000)
    with pytest.raises(ConflictError, match="has not ended"):
        close_period(session, MARCH, now=at("2026-03-31 23:59"))
    first = close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    snapshot = _snapshot(session)
    again = close_period(session, MARCH, now=at("2026-04-05 00:00"))
    session.commit()
    assert again.already_closed and again.invoice_ids == []
    assert _snapshot(session) == snapshot and len(first.invoice_ids) == 1
    with pytest.raises(ConflictError, match="already closed"):
        close_period(session, Period(2026, 2), now=at("2026-04-05 00:00"))


def _snapshot(session: Session) -> list:
    invoices = [(i.id, i.total_minor, i.total_amount, i.status) for i in session.scalars(sa.select(Invoice))]
    lines = [(line.id, line.amount, line.amount_minor) for line in session.scalars(sa.select(InvoiceLine))]
    billed = session.execute(sa.select(BilledUsage.usage_record_id, BilledUsage.invoice_id)).all()
    return [sorted(invoices), sorted(lines), sorted(billed)]


def test_late_usage_lands_on_the_next_invoice_as_an_adjustment(session: Session, acme) -> None:
    _usage(session, acme, "2026-03-02 09:00", out=600_000)
    _usage(session, acme, "2026-03-20 09:00", out=900_000)  # March short output: 1.5M
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    (march,) = list_invoices(session, acme.account_id)
    march_lines = _lines(session, march.id)
    _usage(session, acme, "2026-03-31 23:00", out=600_000)  # arrives after March closed
    _usage(session, acme, "2026-04-03 09:00", out=100_000)
    close_period(session, APRIL, now=at("2026-05-01 01:00"))
    session.commit()
    april = next(i for i in list_invoices(session, acme.account_id) if i.period == "2026-04")
    assert _lines(session, april.id) == [
        ("2026-04", False, "test@v2", "m", "short", "output", 1, 100_000, D("3"), D("0.3"), 30),
        # continues March's billed 1.5M: units (1.5M, 2.1M] at test@v2 tier 2
        ("2026-03", True, "test@v2", "m", "short", "output", 2, 600_000, D("2"), D("1.2"), 120),
    ]
    assert april.total_minor == 150
    assert _lines(session, march.id) == march_lines  # the closed invoice did not move


def test_late_usage_on_a_volume_table_reprices_the_units_already_billed(session: Session, acme) -> None:
    # "pro" output is a volume table: up to 1M tokens at 10 per 1M, beyond at 8 per 1M, every unit of
    # the month at the price of the tier the month's whole volume reaches.
    _usage(session, acme, "2026-03-02 09:00", out=900_000, model="pro")  # billed in March at 10: 9.00
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    (march,) = list_invoices(session, acme.account_id)
    assert march.total_minor == 900
    _usage(session, acme, "2026-03-31 23:00", out=200_000, model="pro")  # late: March now has 1.1M
    close_period(session, APRIL, now=at("2026-05-01 01:00"))
    session.commit()

    april = next(i for i in list_invoices(session, acme.account_id) if i.period == "2026-04")
    assert _lines(session, april.id) == [
        # the 900,000 billed at tier 1 (10) repriced to tier 2 (8): 900,000 x -2 / 1M
        ("2026-03", True, "test@v1", "pro", "short", "output", 2, 900_000, D("-2"), D("-1.8"), -180),
        # the 200,000 late ones at tier 2 (the late record falls under test@v2, same prices for pro)
        ("2026-03", True, "test@v2", "pro", "short", "output", 2, 200_000, D("8"), D("1.6"), 160),
    ]
    assert [line.repriced_from_tier for line in invoice_lines(session, april.id)] == [1, None]
    assert april.total_minor == -20  # a credit: the month got cheaper
    # In all, March costs what the schedule says its whole volume costs: 1.1M x 8 / 1M = 8.80.
    assert march.total_minor + april.total_minor == 880
    # The export re-rates the ledger to the same lines, the repricing row naming its record.
    from billing.invoicing.exports import export_rows

    summary, detail = export_rows(session, APRIL)
    assert sorted((row["line_number"], row["amount"]) for row in detail) == [(1, "-1.8"), (2, "1.6")]


def test_the_issues_example_999_then_100_late_then_1000_more(session: Session) -> None:
    """#16 item 4 as filed: a month billed at 999 tokens on a volume table, then 100 late ones. The
    old close billed the late 100 at the tier of 1,099 and never repriced the 999: 11.99 + 1.00 =
    12.99 for a month the schedule prices at 10.99 (18% more). A second late round moves the month
    again, from the tier it was repriced to."""
    # Volume output table, per 1M: up to 1,000 tokens 12,000; up to 2,000 10,000; beyond 9,000.
    prices = {
        "cache_hit_input": flat("1"),
        "cache_miss_input": flat("1"),
        "output": table("volume", (1000, "12000"), (2000, "10000"), (None, "9000")),
    }
    load_schedule(
        session, parse_schedule(schedule("vol", version("v1", "2026-01-01", [model_entry("*", prices)])))
    )
    customer = add_customer(session, "vic")
    assign_schedule(session, customer.account_id, "vol", at("2026-01-01 00:00"))
    add_usage(session, customer, at("2026-03-10 09:00"), out=999)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    add_usage(session, customer, at("2026-03-31 23:59"), out=100)  # late: March is now 1,099
    close_period(session, APRIL, now=at("2026-05-01 01:00"))
    add_usage(session, customer, at("2026-03-31 23:59"), out=1000)  # later still: March is 2,099
    close_period(session, Period(2026, 5), now=at("2026-06-01 01:00"))
    session.commit()
    by_period = {invoice.period: invoice for invoice in list_invoices(session, customer.account_id)}

    def lines(period: str) -> list[tuple]:
        return [
            (
                line.price_tier,
                line.repriced_from_tier,
                line.tokens,
                line.unit_price,
                line.amount,
                line.amount_minor,
            )
            for line in invoice_lines(session, by_period[period].id)
        ]

    # By hand (tier, repriced from, tokens, unit price, exact amount, cents):
    assert lines("2026-03") == [(1, None, 999, D("12000"), D("11.988"), 1199)]
    assert lines("2026-04") == [
        (2, None, 100, D("10000"), D("1"), 100),
        (2, 1, 999, D("-2000"), D("-1.998"), -200),  # the 999 moved from tier 1 to tier 2
    ]
    assert lines("2026-05") == [
        (3, None, 1000, D("9000"), D("9"), 900),
        (3, 2, 1099, D("-1000"), D("-1.099"), -110),  # all 1,099 billed so far, now at tier 3
    ]
    assert [by_period[p].total_minor for p in ("2026-03", "2026-04", "2026-05")] == [1199, -100, 790]
    # March in all: 1,099 x 10,000 / 1M = 10.99 after April, 2,099 x 9,000 / 1M = 18.891 -> 18.89 after May.
    assert by_period["2026-03"].total_minor + by_period["2026-04"].total_minor == 1099
    assert sum(invoice.total_minor for invoice in by_period.values()) == 1889


def test_late_usage_that_keeps_a_volume_tier_reprices_nothing(session: Session, acme) -> None:
    _usage(session, acme, "2026-03-02 09:00", out=100_000, model="pro")
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    _usage(session, acme, "2026-03-31 23:00", out=100_000, model="pro")  # 200,000: still tier 1
    close_period(session, APRIL, now=at("2026-05-01 01:00"))
    session.commit()
    april = next(i for i in list_invoices(session, acme.account_id) if i.period == "2026-04")
    assert _lines(session, april.id) == [
        ("2026-03", True, "test@v2", "pro", "short", "output", 1, 100_000, D("10"), D("1"), 100),
    ]


def test_finalized_invoices_are_immutable(session: Session, acme) -> None:
    _usage(session, acme, "2026-03-02 09:00", out=600_000)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    (invoice,) = list_invoices(session, acme.account_id)
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = at("2026-04-03 00:00")
    session.commit()  # status may move
    invoice.total_minor += 1
    with pytest.raises(ImmutableInvoiceError):
        session.flush()
    session.rollback()
    (line,) = invoice_lines(session, invoice.id)
    line.amount_minor = 0
    with pytest.raises(ImmutableInvoiceError):
        session.flush()
    session.rollback()
    session.delete(session.get(InvoiceLine, line.id))
    with pytest.raises(ImmutableInvoiceError):
        session.flush()
    session.rollback()


def test_the_database_refuses_edits_of_issued_invoices(session: Session, acme) -> None:
    """Not only through the ORM: a raw statement, whoever runs it (migration 0006's triggers)."""
    _usage(session, acme, "2026-03-02 09:00", out=600_000)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    (invoice,) = list_invoices(session, acme.account_id)
    for statement in (
        "UPDATE invoice_lines SET amount_minor = amount_minor + 100",
        "UPDATE invoice_lines SET tokens = tokens",  # even a no-op rewrite of a line
        "DELETE FROM invoice_lines",
        "UPDATE invoices SET total_minor = total_minor + 100",
        "UPDATE invoices SET currency = 'eur'",
        "DELETE FROM invoices",
    ):
        with pytest.raises(sa.exc.DatabaseError, match="issued invoices are immutable"):
            session.execute(sa.text(statement))
        session.rollback()
    session.execute(
        sa.update(Invoice)
        .where(Invoice.id == invoice.id)
        .values(status=InvoiceStatus.PAID, paid_at=at("2026-04-03 00:00"))
    )
    session.commit()  # the status and its timestamp may move
    session.refresh(invoice)
    assert invoice.status is InvoiceStatus.PAID and invoice.total_minor == sum(
        line.amount_minor for line in invoice_lines(session, invoice.id)
    )


def test_an_export_refuses_lines_that_do_not_add_up(session: Session, acme) -> None:
    from billing.invoicing.exports import ExportIntegrityError, export_rows

    _usage(session, acme, "2026-03-02 09:00", out=600_000)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    assert export_rows(session, MARCH)[0]  # a sound invoice exports
    # An edit the triggers could not stop (they were dropped, say, by hand), seen inside the same
    # transaction and rolled back after (DDL is transactional on both), so later tests keep them:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("ALTER TABLE invoice_lines DISABLE TRIGGER invoice_lines_immutable"))
    else:
        session.execute(sa.text("DROP TRIGGER invoice_lines_immutable_update"))
    session.execute(sa.text("UPDATE invoice_lines SET amount_minor = amount_minor + 100"))
    with pytest.raises(ExportIntegrityError, match="billed"):
        export_rows(session, MARCH)
    session.rollback()


def test_marginal_costs_add_up_to_the_graduated_invoice(session: Session, acme) -> None:
    marginal = []
    for day, out in [(2, 600_000), (3, 500_000), (4, 2_500_000), (5, 7)]:  # crosses 1M and 3M
        usage = TokenUsage(cache_hit_input_tokens=300, cache_miss_input_tokens=200, output_tokens=out)
        when = at(f"2026-03-{day:02d} 09:00")
        marginal.append(
            price_request(session, account_id=acme.account_id, model="m", usage=usage, at=when).amount
        )
        _usage(session, acme, f"2026-03-{day:02d} 09:00", hit=300, miss=200, out=out)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    (invoice,) = list_invoices(session, acme.account_id)
    assert add(*marginal) == invoice.total_amount


def test_beat_closes_every_due_period_after_the_grace(session_factory, session: Session, acme) -> None:
    _usage(session, acme, "2026-02-10 09:00", out=1000)
    _usage(session, acme, "2026-03-10 09:00", out=1000)
    session.commit()
    assert periods_due(session, at("2026-04-01 00:30")) == [Period(2026, 2)]  # March still in its grace
    results = close_previous_month(session_factory, now=at("2026-04-01 01:30"))
    assert [(r.period, len(r.invoice_ids)) for r in results] == [("2026-02", 1), ("2026-03", 1)]
    assert close_previous_month(session_factory, now=at("2026-04-01 02:30")) == []
    with session_factory() as fresh:
        assert periods_due(fresh, at("2026-05-01 01:30")) == [APRIL]


@pytest.mark.postgres
def test_concurrent_closes_make_one_invoice(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        _test_schedule(session)
        customer = _customer(session)
        _usage(session, customer, "2026-03-02 09:00", out=600_000)
    results, errors = [], []
    start = threading.Barrier(4)

    def close() -> None:
        start.wait()
        try:
            with unit_of_work(factory) as session:
                results.append(close_period(session, MARCH, now=at("2026-04-01 01:00")))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(r.already_closed for r in results) == [False, True, True, True]
    with factory() as session:
        assert len(list_invoices(session)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(BilledUsage)) == 1
    engine.dispose()

"""Credit notes by hand-computed tables: an issued invoice is corrected, never edited; notes never give
back more than a line (or the invoice) charged; exported with the invoices; pushed to Stripe once."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
import stripe
from sqlalchemy.orm import Session

from billing.invoicing.credit_notes import CreditRequest, credit_notes_of, issue_credit_note
from billing.invoicing.exports import export_rows
from billing.invoicing.invoices import close_period, invoice_lines, list_invoices
from billing.payments.stripe_sync import push_credit_note, push_invoice, stripe_client
from billing.periods import Period
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from billing.settings import BillingSettings
from hybatch.errors import InvalidRequestError, NotFoundError
from hybatch.models import CreditNote, Invoice, InvoiceStatus
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version
from tests.billing.stripe_server import StripeServer

M = 1_000_000


@pytest.fixture
def invoice(session: Session) -> Invoice:
    """March: 1,000,000 cache-miss tokens at 2/1M = 300... by hand: line 1 miss 1.5M = 3.00 (300),
    line 2 output 250,000 at 8/1M = 2.00 (200); total 500."""
    customer = add_customer(session, "acme")
    prices = {"cache_hit_input": flat("0.2"), "cache_miss_input": flat("2"), "output": flat("8")}
    load_schedule(
        session, parse_schedule(schedule("flat", version("v1", "2026-01-01", [model_entry("*", prices)])))
    )
    assign_schedule(session, customer.account_id, "flat", at("2026-01-01 00:00"))
    add_usage(session, customer, at("2026-03-05 10:00"), miss=M, out=250_000)
    add_usage(session, customer, at("2026-03-06 10:00"), miss=500_000)
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    session.commit()
    (row,) = list_invoices(session, customer.account_id)
    lines = [
        (line.line_number, line.token_class, line.amount_minor) for line in invoice_lines(session, row.id)
    ]
    assert lines == [(1, "cache_miss_input", 300), (2, "output", 200)] and row.total_minor == 500
    return row


def test_notes_give_back_at_most_what_each_line_and_the_invoice_charged(
    session: Session, invoice: Invoice
) -> None:
    first = issue_credit_note(
        session, None, invoice.id, reason="output billed twice", credits=[CreditRequest(2, 50)]
    )
    second = issue_credit_note(
        session, invoice.account_id, invoice.id, reason="outage", credits=[CreditRequest(1)]
    )
    assert (first.number, first.total_minor, second.number, second.total_minor) == (1, 50, 2, 300)
    with pytest.raises(InvalidRequestError, match="line 2: 151 minor units is more than the 150 it has left"):
        issue_credit_note(session, None, invoice.id, reason="again", credits=[CreditRequest(2, 151)])
    third = issue_credit_note(session, None, invoice.id, reason="goodwill", credits=[CreditRequest(2)])
    assert third.total_minor == 150  # 500 given back in all: the invoice's total
    with pytest.raises(InvalidRequestError, match="nothing to give back"):
        issue_credit_note(session, None, invoice.id, reason="more", credits=[CreditRequest(1)])
    notes = [
        (note.number, [(line.invoice_line_number, line.amount_minor) for line in lines])
        for note, lines in credit_notes_of(session, invoice.id)
    ]
    assert notes == [(1, [(2, 50)]), (2, [(1, 300)]), (3, [(2, 150)])]
    # The invoice itself is as issued.
    session.refresh(invoice)
    assert invoice.total_minor == 500


def test_what_prepaid_credit_paid_goes_back_as_credit_not_as_a_note(session: Session) -> None:
    from billing.credits.drawdown import draw_credits
    from billing.credits.grants import grant_credits

    customer = add_customer(session, "pip")
    prices = {"cache_hit_input": flat("0.2"), "cache_miss_input": flat("2"), "output": flat("8")}
    load_schedule(
        session, parse_schedule(schedule("flat", version("v1", "2026-01-01", [model_entry("*", prices)])))
    )
    assign_schedule(session, customer.account_id, "flat", at("2026-01-01 00:00"))
    grant_credits(session, customer.account_id, amount=Decimal("4.50"), currency="usd", now=at("2026-03-01"))
    # By hand (as tests/billing/test_credits.py): lines 3.00 + 2.00, the grant paid 4.50, 0.50 due.
    for custom_id, miss, out, drawn, when in (
        ("r1", M, 250_000, "4.00", "2026-03-05 10:00"),
        ("r2", 500_000, 0, "0.50", "2026-03-06 10:00"),
    ):
        draw_credits(
            session,
            account_id=customer.account_id,
            batch_id=customer.batch_id,
            custom_id=custom_id,
            amount=Decimal(drawn),
            currency="usd",
            at=at(when),
        )
        add_usage(session, customer, at(when), miss=miss, out=out, custom_id=custom_id)
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    (row,) = list_invoices(session, customer.account_id)
    assert row.total_minor == 50
    with pytest.raises(InvalidRequestError) as raised:
        issue_credit_note(session, None, row.id, reason="outage", credits=[CreditRequest(1)])
    assert raised.value.message == (
        "300 minor units is more than the invoice has left to give back (50); prepaid credit paid 450 "
        "of it: give that back with hybatch credits grant"
    )
    assert (
        issue_credit_note(session, None, row.id, reason="outage", credits=[CreditRequest(1, 50)]).total_minor
        == 50
    )


def test_every_problem_is_named_at_once(session: Session, invoice: Invoice) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        issue_credit_note(
            session,
            None,
            invoice.id,
            reason=" ",
            credits=[CreditRequest(9), CreditRequest(1, 0), CreditRequest(1, 5)],
        )
    message = raised.value.message
    assert "a reason" in message and "no line 9" in message and "nothing to give back (0" in message
    assert "line 1 is named twice" in message
    with pytest.raises(NotFoundError):
        issue_credit_note(session, "acct_other", invoice.id, reason="x", credits=[CreditRequest(1)])


def test_notes_are_immutable_in_the_database(session: Session, invoice: Invoice) -> None:
    note = issue_credit_note(session, None, invoice.id, reason="outage", credits=[CreditRequest(1, 100)])
    session.commit()
    for statement in (
        "UPDATE credit_note_lines SET amount_minor = amount_minor + 1",
        "DELETE FROM credit_note_lines",
        "UPDATE credit_notes SET total_minor = 1",
        "DELETE FROM credit_notes",
    ):
        with pytest.raises(Exception, match="immutable"):
            session.execute(sa.text(statement))
        session.rollback()
    session.execute(
        sa.text("UPDATE credit_notes SET stripe_credit_note_id = 'cn_x' WHERE id = :id"), {"id": note.id}
    )
    session.commit()


def test_notes_are_exported_with_their_invoice(session: Session, invoice: Invoice) -> None:
    note = issue_credit_note(
        session, None, invoice.id, reason="outage", credits=[CreditRequest(2, 50), CreditRequest(1, 25)]
    )
    summary, _ = export_rows(session, Period(2026, 3))
    rows = [
        (r["row_type"], r.get("line_number"), r["amount_minor"], r.get("credit_note_id")) for r in summary
    ]
    assert rows == [
        ("line", 1, 300, None),
        ("line", 2, 200, None),
        ("credit_note", 2, -50, note.id),
        ("credit_note", 1, -25, note.id),
    ]
    assert [r["billed_amount"] for r in summary if r["row_type"] == "credit_note"] == ["-0.50", "-0.25"]


@pytest.fixture
def client() -> Iterator[tuple[StripeServer, stripe.StripeClient]]:
    with StripeServer() as server:
        yield (
            server,
            stripe_client(BillingSettings(stripe_api_key="sk_test_hybatch", stripe_api_base=server.url)),
        )


def test_notes_go_to_stripe_once(session: Session, invoice: Invoice, client) -> None:
    server, stripe_api = client
    note = issue_credit_note(
        session, None, invoice.id, reason="outage", credits=[CreditRequest(2, 50), CreditRequest(1)]
    )
    session.commit()
    assert push_credit_note(session, stripe_api, note.id) is None  # its invoice is not in Stripe yet
    push_invoice(session, stripe_api, invoice.id)
    stripe_id = push_credit_note(session, stripe_api, note.id)
    assert server.fake.credit_notes[stripe_id]["total"] == 350
    posts = [(path, key, params) for path, key, params in server.fake.writes() if path == "/v1/credit_notes"]
    assert [
        (key, params["lines[0][unit_amount]"], params["lines[1][unit_amount]"], params["memo"])
        for _, key, params in posts
    ] == [(f"hybatch-credit-note-{note.id}", "50", "300", "outage")]
    # Again: nothing new (recorded); and a note whose Stripe id was lost replays the same object.
    assert push_credit_note(session, stripe_api, note.id) == stripe_id
    session.execute(sa.text("UPDATE credit_notes SET stripe_credit_note_id = NULL"))
    session.commit()
    assert push_credit_note(session, stripe_api, note.id) == stripe_id
    assert len(server.fake.credit_notes) == 1
    assert session.get(CreditNote, note.id).stripe_credit_note_id == stripe_id


def test_a_note_on_a_paid_invoice_credits_the_customers_stripe_balance(
    session: Session, invoice: Invoice, client
) -> None:
    """Stripe refuses a post-payment credit note that does not say where its money goes; ours goes to
    the customer's balance (it pays their next invoice). A note before payment reduces what is due."""
    server, stripe_api = client
    before = issue_credit_note(session, None, invoice.id, reason="outage", credits=[CreditRequest(1, 100)])
    session.commit()
    push_invoice(session, stripe_api, invoice.id)
    push_credit_note(session, stripe_api, before.id)
    server.fake.mark_paid(invoice.stripe_invoice_id)
    invoice.status = InvoiceStatus.PAID  # as the invoice.paid webhook records it
    session.commit()
    after = issue_credit_note(session, None, invoice.id, reason="goodwill", credits=[CreditRequest(2, 75)])
    session.commit()
    stripe_id = push_credit_note(session, stripe_api, after.id)
    posts = [params for path, _key, params in server.fake.writes() if path == "/v1/credit_notes"]
    assert [params.get("credit_amount") for params in posts] == [None, "75"]
    assert server.fake.credit_notes[stripe_id]["credit_amount"] == 75
    assert sum(note["total"] for note in server.fake.credit_notes.values()) == 175  # 1.00 + 0.75


def test_the_invoice_over_http_lists_its_credit_notes(api, caller, session_factory) -> None:
    headers, customer = caller("zed")
    with session_factory() as session:
        add_usage(session, customer, at("2026-03-05 10:00"), miss=M, out=250_000)
        close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
        (row,) = list_invoices(session, customer.account_id)
        note = issue_credit_note(session, None, row.id, reason="outage", credits=[CreditRequest(1, 7)])
        session.commit()
        invoice_id, note_id = row.id, note.id
    body = api.get(f"/v1/billing/invoices/{invoice_id}", headers=headers).json()
    assert body["credit_notes"] == [
        {
            "id": note_id,
            "object": "billing.credit_note",
            "number": 1,
            "reason": "outage",
            "currency": "usd",
            "total_minor": 7,
            "created_at": body["credit_notes"][0]["created_at"],
            "lines": [{"invoice_line_number": 1, "amount_minor": 7}],
        }
    ]


def test_the_credit_note_command(tmp_path, monkeypatch, sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from hybatch import cli
    from hybatch.db import make_engine, make_session_factory

    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_DATABASE_URL", sqlite_url)
    engine = make_engine(sqlite_url)
    with make_session_factory(engine)() as session:
        customer = add_customer(session, "acme")
        add_usage(session, customer, at("2026-03-05 10:00"), miss=M, out=250_000)  # default schedule
        close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
        (row,) = list_invoices(session, customer.account_id)
        lines = {line.line_number: line.amount_minor for line in invoice_lines(session, row.id)}
        session.commit()
    engine.dispose()
    runner = CliRunner()
    args = [
        "billing",
        "credit-note",
        "--invoice",
        row.id,
        "--reason",
        "outage",
        "--line",
        "1",
        "--line",
        "2:0.10",
    ]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    expected = Decimal(lines[1] + 10).scaleb(-2)  # all of line 1 and 10 cents of line 2
    assert f"(no. 1) on {row.id}: {expected} usd" in result.output
    bad = runner.invoke(
        cli.app, ["billing", "credit-note", "--invoice", row.id, "--reason", "x", "--line", "2:0.001"]
    )
    assert bad.exit_code == 1 and "minor unit" in bad.output

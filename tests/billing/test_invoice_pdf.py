"""Invoice PDFs against a hand-computed invoice: every line's description, tokens, unit price and
amount and the total, as the export shows them; late usage says so; ``hybatch billing pdf`` and
``billing close`` name the account."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from billing.credits.drawdown import draw_credits
from billing.credits.grants import grant_credits
from billing.invoicing.credit_notes import CreditRequest, issue_credit_note
from billing.invoicing.exports import export_rows
from billing.invoicing.invoice_document import invoice_document
from billing.invoicing.invoices import close_period, list_invoices
from billing.invoicing.pdf import render_invoice_pdf
from billing.periods import Period
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from hybatch import cli
from hybatch.db import make_engine, make_session_factory
from tests.billing.ledger import Customer, add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version

D = Decimal
M = 1_000_000
MARCH, APRIL = Period(2026, 3), Period(2026, 4)
SHORT, LONG = "up to 100,000 tokens", "over 100,000 tokens"

# March, by hand. Short prompts (<= 100,000 tokens): hit $0.10, miss $1.00, output $2.00 for the
# month's first 1M then $1.50 (graduated). Long prompts: hit $0.20, miss $2.00, output $4.00.
# Requests: (hit 90,000, miss 10,000, out 600,000) short; (miss 150,000, out 500,000) long;
# (hit 40,000, miss 2,000, out 700,000) short.
# (token class, prompt length, monthly tokens, tokens, unit price, amount as billed)
MARCH_LINES = [
    ("Cache hit input", SHORT, "any", "130,000", "$0.10 / 1M tokens", "$0.01"),  # 0.013 -> 1 cent
    ("Cache miss input", SHORT, "any", "12,000", "$1.00 / 1M tokens", "$0.01"),  # 0.012 -> 1 cent
    ("Output", SHORT, "first 1M", "1,000,000", "$2.00 / 1M tokens", "$2.00"),
    ("Output", SHORT, "over 1M", "300,000", "$1.50 / 1M tokens", "$0.45"),
    ("Cache miss input", LONG, "any", "150,000", "$2.00 / 1M tokens", "$0.30"),
    ("Output", LONG, "any", "500,000", "$4.00 / 1M tokens", "$2.00"),
]
MARCH_TOTAL = "$4.77"  # 1 + 1 + 200 + 45 + 30 + 200 cents
# The export writes the same tokens and billed amounts as plain numbers.
EXPORTED = sorted(
    (cls.lower().replace(" ", "_"), tokens.replace(",", ""), amount.removeprefix("$"))
    for cls, _, _, tokens, _, amount in MARCH_LINES
)


def _schedule(session: Session) -> None:
    short = {
        "cache_hit_input": flat("0.1"),
        "cache_miss_input": flat("1"),
        "output": table("graduated", (M, "2"), (None, "1.5")),
    }
    long = {"cache_hit_input": flat("0.2"), "cache_miss_input": flat("2"), "output": flat("4")}
    v1 = version("v1", "2026-01-01", [model_entry("*", {"short": short, "long": long})], long_from=100_000)
    load_schedule(session, parse_schedule(schedule("pdf", v1)))


def _march(session: Session, name: str = "acme") -> Customer:
    return _march_usage(session, _account(session, name))


def _account(session: Session, name: str) -> Customer:
    customer = add_customer(session, name)
    assign_schedule(session, customer.account_id, "pdf", at("2026-01-01 00:00"))
    return customer


def _march_usage(session: Session, customer: Customer) -> Customer:
    add_usage(
        session,
        customer,
        at("2026-03-02 09:00"),
        hit=90_000,
        miss=10_000,
        out=600_000,
        model="m",
        custom_id="r1",
    )
    add_usage(session, customer, at("2026-03-09 09:00"), miss=150_000, out=500_000, model="m")
    add_usage(session, customer, at("2026-03-30 23:59"), hit=40_000, miss=2_000, out=700_000, model="m")
    return customer


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def printed_row(model: str, line: tuple[str, ...]) -> str:
    """How one line reads in the PDF's text: description on two lines, then the figures."""
    token_class, prompt_length, monthly, tokens, unit_price, amount = line
    return f"{model} · {token_class}\n{prompt_length} · {monthly}\n{tokens} {unit_price} {amount}"


def test_the_pdf_prints_the_hand_computed_invoice(session: Session) -> None:
    _schedule(session)
    acme = _march(session)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    session.commit()
    [invoice] = list_invoices(session, acme.account_id)
    text = pdf_text(render_invoice_pdf(invoice_document(session, acme.account_id, invoice.id)))
    for line in MARCH_LINES:
        assert printed_row("m", line) in text
    assert f"Total {MARCH_TOTAL}" in text
    assert text.count(" / 1M tokens ") == len(MARCH_LINES)  # no other line
    for fact in ("Account acme", "Period 2026-03", "Status Open", f"Invoice {invoice.id}", "Currency USD"):
        assert fact in text
    summary, _ = export_rows(session, MARCH, acme.account_id)
    assert sorted((r["token_class"], str(r["tokens"]), r["billed_amount"]) for r in summary) == EXPORTED
    assert invoice.total_minor == 477


def test_prepaid_credit_is_deducted_as_the_export_shows_it(session: Session) -> None:
    _schedule(session)
    acme = _account(session, "acme")
    grant_credits(session, acme.account_id, amount=D("5.00"), currency="usd", now=at("2026-03-01 00:00"))
    draw_credits(
        session,
        account_id=acme.account_id,
        batch_id=acme.batch_id,
        custom_id="r1",
        amount=D("2.00"),  # what the grant paid of r1 when it was recorded
        currency="usd",
        at=at("2026-03-02 09:00"),
    )
    _march_usage(session, acme)  # r1 is recorded after its draw, as the worker does
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    [invoice] = list_invoices(session, acme.account_id)
    text = pdf_text(render_invoice_pdf(invoice_document(session, acme.account_id, invoice.id)))
    assert all(printed_row("m", line) in text for line in MARCH_LINES)
    # 4.77 of lines, less the 2.00 the grant paid: 2.77 due
    assert "Subtotal $4.77\nPrepaid credit applied -$2.00\nTotal $2.77" in text
    summary, _ = export_rows(session, MARCH, acme.account_id)
    [credit_row] = [row for row in summary if row["row_type"] == "credit"]
    assert credit_row["billed_amount"] == "-2.00" and invoice.total_minor == 277


def test_credit_notes_issued_since_are_listed_after_the_total(session: Session) -> None:
    _schedule(session)
    acme, other = _march(session), _march(session, "other")
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    [invoice] = list_invoices(session, acme.account_id)
    # Lines are numbered long prompts first: 5 is short Output first 1M ($2.00), 3 short Cache hit
    # input ($0.01), 6 short Output over 1M ($0.45). By hand: note 1 gives back 50 cents of line 5;
    # note 2 all of line 3 (1 cent) and 10 cents of line 6 (11 cents). 477 - 50 - 11 = 416.
    first = issue_credit_note(session, None, invoice.id, reason="Outage", credits=[CreditRequest(5, 50)])
    second = issue_credit_note(
        session, None, invoice.id, reason="Goodwill", credits=[CreditRequest(3), CreditRequest(6, 10)]
    )
    session.commit()
    document = invoice_document(session, acme.account_id, invoice.id)
    text = pdf_text(render_invoice_pdf(document))
    assert f"Total {MARCH_TOTAL}\nCredit notes\n" in text  # the invoice as issued, then its notes
    issued = [note.created_at.strftime("%Y-%m-%d %H:%M UTC") for note in (first, second)]
    assert (
        "Note Issued Reason Lines Given back\n"
        f"no. 1\n{first.id}\n{issued[0]} Outage line 5: $0.50 $0.50\n"
        f"no. 2\n{second.id}\n{issued[1]} Goodwill line 3: $0.01, line 6: $0.10 $0.11\n"
        "Total less credit notes $4.16"
    ) in text
    assert (document.total, document.total_after_credit_notes) == ("$4.77", "$4.16")
    # An invoice without a note has no such section.
    [plain] = list_invoices(session, other.account_id)
    plain_text = pdf_text(render_invoice_pdf(invoice_document(session, other.account_id, plain.id)))
    assert "Credit notes" not in plain_text and f"Total {MARCH_TOTAL}" in plain_text


def test_late_usage_is_named_on_the_next_invoice(session: Session) -> None:
    _schedule(session)
    acme = _march(session)
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    add_usage(session, acme, at("2026-03-31 23:00"), miss=5_000, model="m")  # recorded after the close
    close_period(session, APRIL, now=at("2026-05-01 01:00"))
    session.commit()
    [april, _] = list_invoices(session, acme.account_id)
    text = pdf_text(render_invoice_pdf(invoice_document(session, acme.account_id, april.id)))
    # 5,000 x $1.00 / 1M = $0.005, rounded half up to one cent
    late = ("Cache miss input", SHORT, "any", "5,000", "$1.00 / 1M tokens", "$0.01")
    assert printed_row("m", late).replace("any\n", "any\nlate usage from 2026-03\n") in text
    assert "Total $0.01" in text


def test_the_issuer_heads_the_pdf_and_odd_characters_do_not_break_it(session: Session) -> None:
    _schedule(session)
    customer = _march(session, "café-名前")
    close_period(session, MARCH, now=at("2026-04-01 01:00"))
    [invoice] = list_invoices(session, customer.account_id)
    document = invoice_document(session, customer.account_id, invoice.id)
    pdf = render_invoice_pdf(document, issuer="Example Inference Ltd\\n1 Market Street")
    text = pdf_text(pdf)
    assert text.startswith("Example Inference Ltd\n1 Market Street") and "\\n" not in text
    assert "Account café-??" in text  # outside the core fonts' Windows-1252: printed as "?"
    assert pdf == render_invoice_pdf(document, issuer="Example Inference Ltd\\n1 Market Street")
    # "café-名前": é, 名 and 前 are not ASCII letters, so with the hyphen they are four "-"
    assert document.filename == f"invoice-2026-03-caf-----{invoice.id}.pdf"


runner = CliRunner()


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_DATABASE_URL", sqlite_url)
    return sqlite_url


def test_billing_pdf_and_close_name_the_account(cli_database: str, tmp_path: Path, monkeypatch) -> None:
    engine = make_engine(cli_database)
    with make_session_factory(engine)() as session:
        _schedule(session)
        acme, beta = _march(session), _account(session, "beta")
        grant_credits(session, beta.account_id, amount=D("5.00"), currency="usd", now=at("2026-03-01 00:00"))
        draw_credits(
            session,
            account_id=beta.account_id,
            batch_id=beta.batch_id,
            custom_id="r1",
            amount=D("2.00"),
            currency="usd",
            at=at("2026-03-02 09:00"),
        )
        _march_usage(session, beta)
        session.commit()
    engine.dispose()
    closed = runner.invoke(cli.app, ["billing", "close", "--period", "2026-03"])
    assert closed.exit_code == 0, closed.output
    assert f"  acme ({acme.account_id})  4.77 usd\n" in closed.output
    # beta is prepaid: its grant paid 2.00 of the same 4.77
    assert (
        f"  beta ({beta.account_id})  2.77 usd due (4.77 of usage less 2.00 of prepaid credit)"
        in closed.output
    )
    target = tmp_path / "march.pdf"
    made = runner.invoke(
        cli.app, ["billing", "pdf", "--period", "2026-03", "--account", "acme", "--out", str(target)]
    )
    assert made.exit_code == 0, made.output
    assert f"wrote {target}: acme 2026-03, 6 lines, {MARCH_TOTAL}" in made.output
    text = pdf_text(target.read_bytes())
    assert all(printed_row("m", line) in text for line in MARCH_LINES) and f"Total {MARCH_TOTAL}" in text
    monkeypatch.chdir(tmp_path)  # without --out: the invoice's own name, here
    runner.invoke(cli.app, ["billing", "pdf", "--period", "2026-03", "--account", "acme"])
    assert len(list(tmp_path.glob("invoice-2026-03-acme-inv_*.pdf"))) == 1
    every = runner.invoke(
        cli.app, ["billing", "pdf", "--period", "2026-03", "--out", str(tmp_path / "2026-03")]
    )
    assert every.exit_code == 0, every.output
    written = sorted((tmp_path / "2026-03").glob("*.pdf"))  # one per invoice of the month
    assert [path.name.split("-inv_")[0] for path in written] == [
        "invoice-2026-03-acme",
        "invoice-2026-03-beta",
    ]
    assert written[0].read_bytes() == target.read_bytes()
    for args, message in [
        (["--period", "2026-04"], "2026-04 has no invoices"),
        (["--period", "2026-04", "--account", "acme"], "acme has no invoice for 2026-04"),
        (["--period", "2026-03", "--account", "nobody"], "no account named 'nobody'"),
        (["--period", "2026-3", "--account", "acme"], "YYYY-MM"),
    ]:
        failed = runner.invoke(cli.app, ["billing", "pdf", *args])
        assert failed.exit_code == 1 and message in failed.output, failed.output

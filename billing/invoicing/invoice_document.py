"""A finalized invoice as the words and figures printed on it: what the invoice PDF lays out.

Built from the same rows and the same wording functions as the dashboard's invoice page
(``invoices.invoice_lines``, ``credit_notes_of``, ``line_labels``, ``money_text``), so every
description, amount and total reads exactly as the page and the export show it, and the credit
notes that corrected the invoice since it was issued are listed after its total. Reads only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing import invoices
from billing.invoicing.credit_notes import credit_notes_of, total_less_credit_notes
from billing.invoicing.line_labels import adjustment_note, line_labels, token_class_label
from billing.money_text import integer, minor_money, unit_price
from billing.periods import Period
from billing.pricing.price_sheet import schedule_versions
from hybatch import accounts
from hybatch.errors import NotFoundError
from hybatch.models import Account, BillingPeriodClose, Invoice


@dataclass(frozen=True)
class PrintedLine:
    """One invoice line, each cell as the dashboard's invoice table writes it."""

    line_number: int
    model: str
    token_class: str  # "Cache hit input"
    prompt_length: str  # "up to 262,144 tokens"
    monthly_tokens: str  # "first 1B"
    note: str | None  # why an adjustment line is here ("late usage from 2026-02"); None: a regular line
    tokens: str  # "1,234,567"
    unit_price: str  # "$0.07 / 1M tokens"
    amount: str  # "$12.34": the line's amount rounded once to the currency's minor unit


@dataclass(frozen=True)
class PrintedCreditNote:
    """A credit note on the invoice, as the invoice page's credit-note table writes it."""

    number: int  # 1-based per invoice
    credit_note_id: str
    issued: str  # "2026-04-03 10:00 UTC"
    reason: str
    lines: str  # "line 1: $0.05, line 2: $0.10"
    given_back: str  # "$0.15": whole minor units, nothing rounded


@dataclass(frozen=True)
class InvoiceDocument:
    invoice_id: str
    account_name: str
    period: str  # YYYY-MM
    status: str  # "Open", "Paid", ...
    currency: str  # "USD"
    finalized_at: datetime  # UTC; printed as ``finalized``
    lines: tuple[PrintedLine, ...]
    subtotal: str  # "$12.34": the lines' rounded amounts added up
    credit: str | None  # "-$2.00": the prepaid credit deducted (as the export's credit row); None: none
    total: str  # "$10.34": what is due, the subtotal less the credit
    credit_notes: tuple[PrintedCreditNote, ...] = ()  # in number order; the invoice stays as issued
    total_after_credit_notes: str | None = None  # "$10.19": the total less every note; None: no note

    @property
    def finalized(self) -> str:
        """``2026-04-01 00:00 UTC``, as the dashboard writes times."""
        return self.finalized_at.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def filename(self) -> str:
        """``invoice-2026-03-acme-inv_....pdf``: sorts by month, names the account (ASCII only: it
        travels in a Content-Disposition header)."""
        safe_name = "".join(
            c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in self.account_name
        )
        return f"invoice-{self.period}-{safe_name}-{self.invoice_id}.pdf"


def invoice_document(session: Session, account_id: str, invoice_id: str) -> InvoiceDocument:
    """The account's invoice ``invoice_id`` as printed; NotFoundError for another account's."""
    invoice = invoices.get_invoice(session, account_id, invoice_id)
    lines = invoices.invoice_lines(session, invoice.id)
    labels = line_labels(schedule_versions(session, {line.price_version for line in lines}), lines)
    closed_months = set(session.scalars(sa.select(BillingPeriodClose.period)))
    credit = invoices.invoice_credit(session, invoice.id)
    notes = credit_notes_of(session, invoice.id)
    currency = invoice.currency
    return InvoiceDocument(
        invoice_id=invoice.id,
        account_name=session.get(Account, invoice.account_id).name,
        period=invoice.period,
        status=invoice.status.value.capitalize(),
        currency=currency.upper(),
        finalized_at=invoice.finalized_at.astimezone(UTC),
        lines=tuple(
            PrintedLine(
                line_number=line.line_number,
                model=line.model,
                token_class=token_class_label(line.token_class),
                prompt_length=labels[line.line_number].prompt_length,
                monthly_tokens=labels[line.line_number].monthly_tokens,
                note=adjustment_note(line.origin_period, closed_months) if line.is_adjustment else None,
                tokens=integer(line.tokens),
                unit_price=unit_price(line.unit_price, currency),
                amount=minor_money(line.amount_minor, currency),
            )
            for line in lines
        ),
        subtotal=minor_money(sum(line.amount_minor for line in lines), currency),
        credit=minor_money(-credit.amount_minor, currency) if credit is not None else None,
        total=minor_money(invoice.total_minor, currency),
        credit_notes=tuple(
            PrintedCreditNote(
                number=note.number,
                credit_note_id=note.id,
                issued=note.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                reason=note.reason,
                lines=", ".join(
                    f"line {line.invoice_line_number}: {minor_money(line.amount_minor, note.currency)}"
                    for line in note_lines
                ),
                given_back=minor_money(note.total_minor, note.currency),
            )
            for note, note_lines in notes
        ),
        total_after_credit_notes=(
            minor_money(total_less_credit_notes(invoice, notes), currency) if notes else None
        ),
    )


def find_invoice(session: Session, account_name: str, period: Period) -> Invoice:
    """The invoice of the account named ``account_name`` for ``period``; NotFoundError if none."""
    account = accounts.get_account(session, account_name)
    found = invoices.list_invoices(session, account.id, period)
    if not found:
        raise NotFoundError(
            f"{account_name} has no invoice for {period} (is {period} closed? "
            f"hybatch billing close --period {period})",
            code="invoice_not_found",
            param="period",
        )
    return found[0]

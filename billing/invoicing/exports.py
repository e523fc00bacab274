"""Billing exports of a closed period: one row per invoice line and one per priced request piece.

Both kinds share one table (``row_type`` = ``line``, ``credit`` (prepaid credit deducted, negative),
``credit_note`` (a correction of a line, negative, with its ``credit_note_id``) or ``request``), so a
single CSV opens in a
spreadsheet and filters either way; a request row names its invoice line (``line_number``).
Request rows are re-rated from the ledger exactly as the close rated them (schedule versions
are immutable and never start inside a closed period) and checked against the stored lines:
a difference raises instead of exporting numbers that do not add up.

CSV: UTF-8, a header row, ISO 8601 dates, decimal strings, text that a spreadsheet would run as
a formula (``=``, ``+``, ``-``, ``@``) prefixed with ``'``. JSON: ``{"summary": [...], "detail": [...]}``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing.credit_notes import credit_notes_of
from billing.invoicing.draft import rate_invoice_usage
from billing.invoicing.invoices import invoice_credit, invoice_lines, list_invoices
from billing.money import add, decimal_string, minor_to_decimal, round_to_minor
from billing.periods import Period
from billing.pricing.rating import LineKey, line_key
from billing.pricing.schedule_store import price_book
from hybatch.errors import ConflictError
from hybatch.models import (
    Account,
    ApiKey,
    BilledUsage,
    BillingPeriodClose,
    Invoice,
    InvoiceCredit,
    InvoiceLine,
    UsageRecord,
)

FORMATS = ("csv", "json")
COLUMNS = (
    "row_type",
    "period",
    "invoice_id",
    "invoice_status",
    "account",
    "line_number",
    "origin_period",
    "is_adjustment",
    "date",
    "key_prefix",
    "batch_id",
    "custom_id",
    "model",
    "context_tier",
    "token_class",
    "price_tier",
    "tokens",
    "unit_price",
    "price_version",
    "amount",
    "amount_minor",
    "billed_amount",
    "currency",
    "credit_note_id",
)
_TEXT_COLUMNS = {"account", "key_prefix", "batch_id", "custom_id", "model"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExportIntegrityError(ConflictError):
    """Re-rated request rows do not add up to a stored invoice line."""


def _stored_key(line: InvoiceLine) -> tuple:
    return (
        line.origin_period,
        line.price_version,
        line.model,
        line.token_class,
        line.context_tier,
        line.price_tier,
        line.repriced_from_tier,
    )


def _piece_key(key: LineKey) -> tuple:
    return (
        key.origin_period,
        key.price_version,
        key.model,
        key.token_class.value,
        key.context_tier,
        key.tier_number,
        key.repriced_from_tier,
    )


def export_rows(
    session: Session, period: Period, account_id: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary rows, detail rows) of ``period``'s invoices, of one account when given."""
    if session.get(BillingPeriodClose, str(period)) is None:
        raise ConflictError(
            f"period {period} is not closed yet (hybatch billing close --period {period})",
            code="period_not_closed",
            param="period",
        )
    names = dict(session.execute(sa.select(Account.id, Account.name)).all())
    summary: list[dict[str, Any]] = []
    detail: list[dict[str, Any]] = []
    for invoice in sorted(
        list_invoices(session, account_id, period), key=lambda i: (names.get(i.account_id, ""), i.id)
    ):
        lines = invoice_lines(session, invoice.id)
        credit = invoice_credit(session, invoice.id)
        _check_totals(invoice, lines, credit)
        summary += [_line_row(invoice, line, names) for line in lines]
        if credit is not None:
            summary.append(_credit_row(invoice, credit, names))
        summary += _credit_note_rows(session, invoice, names)
        detail += _request_rows(session, invoice, lines, names)
    return summary, detail


def _check_totals(invoice: Invoice, lines: list[InvoiceLine], credit: InvoiceCredit | None) -> None:
    """Each line's billed amount is its exact amount rounded once, and the lines less the prepaid
    credit add up to the invoice's totals; raises ExportIntegrityError otherwise (an edit the
    database let through)."""
    credit_minor = 0 if credit is None else credit.amount_minor
    credit_amount = Decimal(0) if credit is None else credit.amount
    if credit is not None and credit.amount_minor > round_to_minor(credit.amount, credit.currency):
        raise ExportIntegrityError(f"invoice {invoice.id}: its credit deducts more than its amount")
    for line in lines:
        if line.amount_minor != round_to_minor(line.amount, line.currency):
            raise ExportIntegrityError(
                f"invoice {invoice.id} line {line.line_number}: billed {line.amount_minor} minor units "
                f"for an amount of {decimal_string(line.amount)}"
            )
    if sum(line.amount_minor for line in lines) - credit_minor != invoice.total_minor:
        raise ExportIntegrityError(f"invoice {invoice.id}: its lines do not add up to its total")
    if add(*(line.amount for line in lines), -credit_amount) != invoice.total_amount:
        raise ExportIntegrityError(f"invoice {invoice.id}: its lines do not add up to its exact total")


def _line_row(invoice: Invoice, line: InvoiceLine, names: dict[str, str]) -> dict[str, Any]:
    return {
        "row_type": "line",
        "period": invoice.period,
        "invoice_id": invoice.id,
        "invoice_status": invoice.status.value,
        "account": names.get(invoice.account_id, invoice.account_id),
        "line_number": line.line_number,
        "origin_period": line.origin_period,
        "is_adjustment": line.is_adjustment,
        "model": line.model,
        "context_tier": line.context_tier,
        "token_class": line.token_class,
        "price_tier": line.price_tier,
        "tokens": line.tokens,
        "unit_price": decimal_string(line.unit_price),
        "price_version": line.price_version,
        "amount": decimal_string(line.amount),
        "amount_minor": line.amount_minor,
        "billed_amount": str(minor_to_decimal(line.amount_minor, line.currency)),
        "currency": line.currency,
    }


def _credit_row(invoice: Invoice, credit: InvoiceCredit, names: dict[str, str]) -> dict[str, Any]:
    """The prepaid credit deducted, as a negative summary row (``row_type`` = ``credit``)."""
    return {
        "row_type": "credit",
        "period": invoice.period,
        "invoice_id": invoice.id,
        "invoice_status": invoice.status.value,
        "account": names.get(invoice.account_id, invoice.account_id),
        "amount": decimal_string(-credit.amount),
        "amount_minor": -credit.amount_minor,
        "billed_amount": str(minor_to_decimal(-credit.amount_minor, credit.currency)),
        "currency": credit.currency,
    }


def _credit_note_rows(session: Session, invoice: Invoice, names: dict[str, str]) -> list[dict[str, Any]]:
    """One negative row per credit note line (``row_type`` = ``credit_note``), naming the invoice line
    it corrects; raises ExportIntegrityError for a note whose lines do not add up to its total."""
    rows = []
    for note, lines in credit_notes_of(session, invoice.id):
        if sum(line.amount_minor for line in lines) != note.total_minor:
            raise ExportIntegrityError(f"credit note {note.id}: its lines do not add up to its total")
        for line in lines:
            rows.append(
                {
                    "row_type": "credit_note",
                    "period": invoice.period,
                    "invoice_id": invoice.id,
                    "invoice_status": invoice.status.value,
                    "account": names.get(invoice.account_id, invoice.account_id),
                    "line_number": line.invoice_line_number,
                    "date": note.created_at.date().isoformat(),
                    "amount": decimal_string(-minor_to_decimal(line.amount_minor, note.currency)),
                    "amount_minor": -line.amount_minor,
                    "billed_amount": str(minor_to_decimal(-line.amount_minor, note.currency)),
                    "currency": note.currency,
                    "credit_note_id": note.id,
                }
            )
    return rows


def _request_rows(
    session: Session, invoice: Invoice, lines: list[InvoiceLine], names: dict[str, str]
) -> list[dict[str, Any]]:
    records = list(
        session.scalars(
            sa.select(UsageRecord)
            .join(BilledUsage, BilledUsage.usage_record_id == UsageRecord.id)
            .where(BilledUsage.invoice_id == invoice.id)
            .order_by(UsageRecord.created_at, UsageRecord.id)
        )
    )
    by_id = {record.id: record for record in records}
    book = price_book(session, invoice.account_id)
    pieces = rate_invoice_usage(session, invoice.account_id, Period.parse(invoice.period), records, book)
    # A repricing row names a record an earlier invoice billed (late usage moved its volume tier).
    repriced = {piece.usage_record_id for piece in pieces} - by_id.keys()
    if repriced:
        by_id |= {
            r.id: r for r in session.scalars(sa.select(UsageRecord).where(UsageRecord.id.in_(repriced)))
        }
    prefixes = dict(
        session.execute(
            sa.select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_({r.api_key_id for r in by_id.values()}))
        ).all()
    )
    stored = {_stored_key(line): line for line in lines}
    sums: dict[tuple, list[Decimal]] = defaultdict(list)
    rows = []
    for piece in pieces:
        key = _piece_key(line_key(piece))
        line = stored.get(key)
        if line is None:
            raise ExportIntegrityError(
                f"invoice {invoice.id}: usage re-rates to a line it does not have: {key}"
            )
        sums[key].append(piece.amount)
        record = by_id[piece.usage_record_id]
        rows.append(
            {
                "row_type": "request",
                "period": invoice.period,
                "invoice_id": invoice.id,
                "invoice_status": invoice.status.value,
                "account": names.get(invoice.account_id, invoice.account_id),
                "line_number": line.line_number,
                "origin_period": piece.origin_period,
                "is_adjustment": line.is_adjustment,
                "date": record.created_at.isoformat(),
                "key_prefix": prefixes.get(record.api_key_id, ""),
                "batch_id": record.batch_id,
                "custom_id": record.custom_id,
                "model": piece.charge.model,
                "context_tier": piece.charge.context_tier,
                "token_class": piece.charge.token_class.value,
                "price_tier": piece.tier_number,
                "tokens": piece.tokens,
                "unit_price": decimal_string(piece.unit_price),
                "price_version": piece.price_version,
                "amount": decimal_string(piece.amount),
                "currency": piece.currency,
            }
        )
    for key, line in stored.items():
        if add(*sums.get(key, [])) != line.amount:
            raise ExportIntegrityError(
                f"invoice {invoice.id} line {line.line_number}: request rows do not add up"
            )
    return rows


def _spreadsheet_safe(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if column in _TEXT_COLUMNS and text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def render_csv(summary: list[dict[str, Any]], detail: list[dict[str, Any]]) -> Iterator[str]:
    """The export as CSV text chunks: the header, the line rows, then the request rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in [*summary, *detail]:
        writer.writerow([_spreadsheet_safe(column, row.get(column)) for column in COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def render_json(period: Period, summary: list[dict[str, Any]], detail: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"object": "billing.export", "period": str(period), "summary": summary, "detail": detail},
        ensure_ascii=False,
        indent=1,
    )


def render(
    period: Period, summary: list[dict[str, Any]], detail: list[dict[str, Any]], fmt: str
) -> Iterator[str]:
    """The export in ``fmt`` (csv or json) as text chunks."""
    if fmt == "json":
        return iter([render_json(period, summary, detail)])
    return render_csv(summary, detail)

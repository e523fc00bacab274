"""Monthly close: one finalized invoice per account and period, billed from the usage ledger.

Closing period P (after it ended) marks P closed, then for every account bills each usage record
not yet billed and created before P's end: P's own records as regular lines, records of earlier
(closed) months that arrived late as adjustment lines priced after that month's billed volume.
``billed_usage`` holds each record once (primary key), so no record is ever billed twice, and a
closed period is never closed again: a second close changes nothing. Finalized invoices are
immutable: their lines and money never change (enforced below for ORM writes); only the status
(paid, payment failed, void) and Stripe references move.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from billing.invoicing.draft import draft_invoice, unbilled_records
from billing.periods import Period
from billing.pricing.schedule_store import price_book
from billing.sql import insert_ignoring_conflicts
from hybatch.errors import ConflictError, NotFoundError
from hybatch.ids import new_id
from hybatch.models import (
    BilledUsage,
    BillingPeriodClose,
    Invoice,
    InvoiceCredit,
    InvoiceLine,
    InvoiceStatus,
    UsageRecord,
    utc_now,
)

# Columns of an invoice that may still change after it is finalized.
_MUTABLE_INVOICE_COLUMNS = {
    "status",
    "paid_at",
    "payment_failed_at",
    "voided_at",
    "stripe_invoice_id",
    "stripe_finalized_at",
}


class ImmutableInvoiceError(ConflictError):
    """Something tried to change a finalized invoice's lines or money."""


@dataclass(frozen=True)
class CloseResult:
    period: str
    invoice_ids: list[str]  # invoices created by this close (empty when already closed)
    already_closed: bool


def close_period(session: Session, period: Period, *, now: datetime | None = None) -> CloseResult:
    """Close ``period``: bill every account's unbilled usage created before its end. No commit.

    Idempotent: a closed period returns ``already_closed`` and changes nothing. Raises
    ConflictError while the period has not ended or when a later period is already closed.
    """
    now = now or utc_now()
    if now < period.end:
        raise ConflictError(f"period {period} has not ended yet", code="period_not_ended", param="period")
    if session.get(BillingPeriodClose, str(period)) is not None:
        return CloseResult(str(period), [], already_closed=True)
    later = session.scalar(
        sa.select(sa.func.max(BillingPeriodClose.period)).where(BillingPeriodClose.period > str(period))
    )
    if later is not None:
        raise ConflictError(
            f"period {later} is already closed; {period} can no longer be closed "
            "(its usage was billed with a later period)",
            code="later_period_closed",
            param="period",
        )
    # A concurrent close of the same period waits here on the primary key, then finds it taken.
    if not insert_ignoring_conflicts(session, BillingPeriodClose, {"period": str(period), "closed_at": now}):
        return CloseResult(str(period), [], already_closed=True)
    account_ids = session.scalars(
        sa.select(UsageRecord.account_id)
        .outerjoin(BilledUsage, BilledUsage.usage_record_id == UsageRecord.id)
        .where(BilledUsage.usage_record_id.is_(None), UsageRecord.created_at < period.end)
        .distinct()
    ).all()
    invoice_ids = [bill_account(session, account_id, period, now) for account_id in sorted(account_ids)]
    return CloseResult(str(period), invoice_ids, already_closed=False)


def bill_account(session: Session, account_id: str, period: Period, now: datetime) -> str:
    """Create the account's finalized invoice for ``period`` from its unbilled usage; its id."""
    records = unbilled_records(session, account_id, period.end)
    book = price_book(session, account_id)
    draft = draft_invoice(session, account_id, period, records, book, as_of=period.end)
    invoice = Invoice(
        id=new_id("inv_"),
        account_id=account_id,
        period=str(period),
        currency=draft.currency,
        status=InvoiceStatus.OPEN,
        total_minor=draft.total_minor,
        total_amount=draft.total_amount,
        created_at=now,
        finalized_at=now,
    )
    session.add(invoice)
    session.flush()
    # A draft line has exactly the columns of InvoiceLine (the upcoming invoice renders drafts too).
    session.add_all(InvoiceLine(invoice_id=invoice.id, **asdict(line)) for line in draft.lines)
    if draft.credit_amount > 0:
        session.add(
            InvoiceCredit(
                invoice_id=invoice.id,
                amount=draft.credit_amount,
                amount_minor=draft.credit_minor,
                currency=draft.currency,
            )
        )
    session.execute(
        sa.insert(BilledUsage), [{"usage_record_id": r.id, "invoice_id": invoice.id} for r in records]
    )
    session.flush()
    return invoice.id


def invoice_lines(session: Session, invoice_id: str) -> list[InvoiceLine]:
    return list(
        session.scalars(
            sa.select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.line_number)
        )
    )


def invoice_credit(session: Session, invoice_id: str) -> InvoiceCredit | None:
    """The prepaid credit deducted on the invoice (None: none)."""
    return session.get(InvoiceCredit, invoice_id)


def list_invoices(
    session: Session, account_id: str | None = None, period: Period | None = None
) -> list[Invoice]:
    """Invoices, newest period first; of one account and/or one period when given."""
    query = sa.select(Invoice).order_by(Invoice.period.desc(), Invoice.account_id)
    if account_id is not None:
        query = query.where(Invoice.account_id == account_id)
    if period is not None:
        query = query.where(Invoice.period == str(period))
    return list(session.scalars(query))


@dataclass(frozen=True)
class ClosedPeriod:
    period: str  # YYYY-MM
    closed_at: datetime
    num_invoices: int
    total_minor_by_currency: dict[str, int]


def closed_periods(session: Session) -> list[ClosedPeriod]:
    """Every closed period, newest first, with its invoice count and totals per currency."""
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    counts: dict[str, int] = defaultdict(int)
    for period, currency, num_invoices, total_minor in session.execute(
        sa.select(
            Invoice.period, Invoice.currency, sa.func.count(), sa.func.sum(Invoice.total_minor)
        ).group_by(Invoice.period, Invoice.currency)
    ):
        totals[period][currency] = int(total_minor)
        counts[period] += num_invoices
    rows = session.execute(sa.select(BillingPeriodClose).order_by(BillingPeriodClose.period.desc())).scalars()
    return [
        ClosedPeriod(row.period, row.closed_at, counts[row.period], dict(sorted(totals[row.period].items())))
        for row in rows
    ]


def get_invoice(session: Session, account_id: str, invoice_id: str) -> Invoice:
    """The account's invoice; raises NotFoundError (also for another account's)."""
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or invoice.account_id != account_id:
        raise NotFoundError(
            f"No invoice with id '{invoice_id}'.", code="invoice_not_found", param="invoice_id"
        )
    return invoice


@event.listens_for(InvoiceLine, "before_update")
@event.listens_for(InvoiceLine, "before_delete")
def _refuse_line_changes(_mapper, _connection, line: InvoiceLine) -> None:
    raise ImmutableInvoiceError(f"invoice line {line.invoice_id}#{line.line_number} is finalized")


@event.listens_for(Invoice, "before_delete")
def _refuse_invoice_delete(_mapper, _connection, invoice: Invoice) -> None:
    raise ImmutableInvoiceError(f"invoice {invoice.id} is finalized and cannot be deleted")


@event.listens_for(Invoice, "before_update")
def _refuse_money_changes(_mapper, _connection, invoice: Invoice) -> None:
    state = sa.inspect(invoice)
    changed = {attr.key for attr in state.attrs if attr.history.has_changes()}
    if changed - _MUTABLE_INVOICE_COLUMNS:
        raise ImmutableInvoiceError(
            f"invoice {invoice.id} is finalized; {sorted(changed - _MUTABLE_INVOICE_COLUMNS)} cannot change"
        )

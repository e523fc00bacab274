"""The upcoming invoices: what the closes still to come would invoice if they ran now.

The open period's invoice is the account's unbilled usage created before ``now``, rated and
numbered exactly as ``close_period`` will (both build it with
``billing.invoicing.draft.draft_invoice``): late usage of an earlier, already closed month shows as
adjustment lines, like on the real invoice. Usage that arrives later can still change it; nothing
is stored.

A month that has ended but was not closed yet is not late usage: its close is still to come and
bills it on that month's own invoice. ``upcoming_invoices`` therefore previews one invoice per
such month, oldest first, as the closes would run in order::

    ... closed | ended, not closed (each closes on its own) | open period (so far)
               | 2026-10         | 2026-11                  | 2026-12 up to now
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from billing.invoicing.draft import InvoiceLineDraft, draft_invoice, unbilled_records
from billing.periods import Period
from billing.pricing.schedule_store import PriceBook, last_closed_period, price_book
from hybatch.models import UsageRecord


@dataclass(frozen=True)
class UpcomingInvoice:
    account_id: str
    period: Period  # the month whose close makes this invoice
    as_of: datetime  # usage created before this moment is on it
    currency: str
    lines: tuple[InvoiceLineDraft, ...]  # the fields of hybatch.models.InvoiceLine
    subtotal_minor: int  # sum of the lines' amount_minor
    credit_minor: int  # prepaid credit deducted (billing.credits.applied), rounded once
    total_minor: int  # subtotal_minor - credit_minor
    total_amount: Decimal  # exact, unrounded, after the credit
    num_usage_records: int  # records the lines bill
    has_ended: bool  # True: a past month not closed yet; False: the open period, so far


def upcoming_invoices(session: Session, account_id: str, now: datetime) -> tuple[UpcomingInvoice, ...]:
    """The invoices the account's unbilled usage before ``now`` would get; reads only.

    One per ended month after the last closed one that has unbilled usage, oldest first (each
    bills the usage created before its end that an earlier one did not), then always the open
    period, ``Period.containing(now)``, with the rest. Raises what the closes would raise:
    UnpricedModelError / NoScheduleInEffectError when a record has no price (also
    NoScheduleInEffectError for an account without usage and without a schedule at ``now``),
    ConflictError for usage priced in several currencies.
    """
    current = Period.containing(now)
    records = unbilled_records(session, account_id, now)
    book = price_book(session, account_id)
    previews = []
    for period in _ended_months_to_close(session, records, current):
        taken = [record for record in records if record.created_at < period.end]
        if not taken:
            continue
        records = records[len(taken) :]  # ledger order: the taken ones come first
        previews.append(_preview(session, account_id, period, taken, book, as_of=period.end, has_ended=True))
    previews.append(_preview(session, account_id, current, records, book, as_of=now, has_ended=False))
    return tuple(previews)


def upcoming_invoice(session: Session, account_id: str, now: datetime) -> UpcomingInvoice:
    """The open period's invoice if it were closed at ``now`` (after any ended month before it)."""
    return upcoming_invoices(session, account_id, now)[-1]


def _ended_months_to_close(session: Session, records: list[UsageRecord], current: Period) -> list[Period]:
    """Months before ``current`` that can still be closed and hold some of ``records``, in order."""
    if not records:
        return []
    last_closed = last_closed_period(session)
    month = Period.containing(records[0].created_at)
    if last_closed is not None and month <= last_closed:
        month = last_closed.next()  # a month before the last close can no longer be closed
    months = []
    while month < current:
        months.append(month)
        month = month.next()
    return months


def _preview(
    session: Session,
    account_id: str,
    period: Period,
    records: list[UsageRecord],
    book: PriceBook,
    *,
    as_of: datetime,
    has_ended: bool,
) -> UpcomingInvoice:
    draft = draft_invoice(session, account_id, period, records, book, as_of=as_of)
    return UpcomingInvoice(
        account_id=account_id,
        period=period,
        as_of=as_of,
        currency=draft.currency,
        lines=draft.lines,
        subtotal_minor=draft.subtotal_minor,
        credit_minor=draft.credit_minor,
        total_minor=draft.total_minor,
        total_amount=draft.total_amount,
        num_usage_records=len(records),
        has_ended=has_ended,
    )

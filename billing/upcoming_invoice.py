"""The upcoming invoice: what the open period's invoice would say if it were closed now.

It is the account's unbilled usage created before ``now``, rated and numbered exactly as
``close_period`` will (both build it with ``billing.invoice_draft.draft_invoice``): late usage
of an earlier, already billed month shows as adjustment lines, like on the real invoice. Usage
that arrives later can still change it; nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from billing.invoice_draft import InvoiceLineDraft, draft_invoice, unbilled_records
from billing.periods import Period
from billing.schedules import price_book


@dataclass(frozen=True)
class UpcomingInvoice:
    account_id: str
    period: Period  # the open period: the month holding ``as_of``
    as_of: datetime  # usage created before this moment is on it
    currency: str
    lines: tuple[InvoiceLineDraft, ...]  # the fields of hybatch.models.InvoiceLine
    total_minor: int  # sum of the lines' amount_minor
    total_amount: Decimal  # exact, unrounded
    num_usage_records: int  # records the lines bill


def upcoming_invoice(session: Session, account_id: str, now: datetime) -> UpcomingInvoice:
    """The invoice of ``Period.containing(now)`` if it were closed at ``now``; reads only.

    Raises what the close would raise: UnpricedModelError / NoScheduleInEffectError when a
    record has no price (also NoScheduleInEffectError for an account without usage and without
    a schedule at ``now``), ConflictError for usage priced in several currencies.
    """
    period = Period.containing(now)
    records = unbilled_records(session, account_id, now)
    book = price_book(session, account_id)
    draft = draft_invoice(session, account_id, period, records, book, as_of=now)
    return UpcomingInvoice(
        account_id=account_id,
        period=period,
        as_of=now,
        currency=draft.currency,
        lines=draft.lines,
        total_minor=draft.total_minor,
        total_amount=draft.total_amount,
        num_usage_records=len(records),
    )

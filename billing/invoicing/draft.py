"""What an invoice says before it is stored: unbilled usage -> rated pieces -> numbered lines.

The monthly close stores a draft as a finalized invoice; the upcoming-invoice preview shows one
without storing anything. Both build it here, so a preview made after a period's last usage
has exactly the lines its close will store. Lines are numbered from 1: the period's own usage
first, then adjustments for late usage of earlier (already billed) months.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.credits.applied import credit_for_records
from billing.money import EXACT, add, round_to_minor
from billing.periods import Period
from billing.pricing.rating import (
    LineDraft,
    RatedPiece,
    UsageRow,
    charge_volumes,
    line_drafts,
    rate_month,
    reprice_billed_units,
)
from billing.pricing.schedule_store import PriceBook
from billing.pricing.schedule_version import TokenClass
from hybatch.errors import ConflictError
from hybatch.models import BilledUsage, Invoice, UsageRecord


@dataclass(frozen=True)
class InvoiceLineDraft:
    """One invoice line with the fields of ``hybatch.models.InvoiceLine``."""

    line_number: int  # 1-based
    origin_period: str  # YYYY-MM of the usage; != the invoice's period for late usage
    is_adjustment: bool
    price_version: str  # schedule@version
    model: str
    token_class: TokenClass
    context_tier: str
    price_tier: int  # 1-based row of the tier table
    repriced_from_tier: int | None  # a repricing of units billed at that tier (volume tables)
    tokens: int
    unit_price: Decimal  # per 1M tokens
    amount: Decimal  # exact sum of the line's pieces, major units
    amount_minor: int  # amount rounded once (billing.money.round_to_minor)
    currency: str


@dataclass(frozen=True)
class InvoiceDraft:
    account_id: str
    period: Period
    currency: str
    lines: tuple[InvoiceLineDraft, ...]
    subtotal_minor: int  # sum of the lines' amount_minor
    credit_amount: Decimal  # prepaid credit deducted, exact (billing.credits.applied), >= 0
    credit_minor: int  # credit_amount rounded once, at most subtotal_minor
    total_minor: int  # subtotal_minor - credit_minor: what is due
    total_amount: Decimal  # exact sum of every priced piece (unrounded) - credit_amount


def unbilled_records(session: Session, account_id: str, before: datetime) -> list[UsageRecord]:
    """The account's usage records created before ``before`` that no invoice has billed, in ledger order."""
    return list(
        session.scalars(
            sa.select(UsageRecord)
            .outerjoin(BilledUsage, BilledUsage.usage_record_id == UsageRecord.id)
            .where(
                UsageRecord.account_id == account_id,
                UsageRecord.created_at < before,
                BilledUsage.usage_record_id.is_(None),
            )
            .order_by(UsageRecord.created_at, UsageRecord.id)
        )
    )


def billed_rows(session: Session, account_id: str, origin: Period, before: Period) -> list[UsageRow]:
    """``origin``'s records billed by invoices of periods before ``before``, in ledger order."""
    records = session.scalars(
        sa.select(UsageRecord)
        .join(BilledUsage, BilledUsage.usage_record_id == UsageRecord.id)
        .join(Invoice, Invoice.id == BilledUsage.invoice_id)
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.created_at >= origin.start,
            UsageRecord.created_at < origin.end,
            Invoice.period < str(before),
        )
        .order_by(UsageRecord.created_at, UsageRecord.id)
    )
    return [UsageRow.from_record(record) for record in records]


def rate_invoice_usage(
    session: Session, account_id: str, period: Period, records: list[UsageRecord], book: PriceBook
) -> list[RatedPiece]:
    """The priced pieces of ``records`` billed on ``period``'s invoice (close and exports share this)."""
    by_origin: dict[Period, list[UsageRow]] = defaultdict(list)
    for record in records:
        by_origin[Period.containing(record.created_at)].append(UsageRow.from_record(record))
    pieces = []
    for origin in sorted(by_origin):
        rows = sorted(by_origin[origin], key=lambda row: (row.created_at, row.usage_record_id))
        if origin == period:
            pieces += rate_month(rows, book, origin_period=str(origin))
            continue
        # Late usage of a billed month: after the billed volume, and the billed units repriced where
        # a volume table's tier moved.
        billed = billed_rows(session, account_id, origin, period)
        volume_before = charge_volumes(billed, book)
        pieces += rate_month(rows, book, origin_period=str(origin), volume_before=volume_before)
        late_volume = charge_volumes(rows, book)
        volume_after = {
            c: volume_before.get(c, 0) + late_volume.get(c, 0) for c in volume_before | late_volume
        }
        pieces += reprice_billed_units(
            billed, book, origin_period=str(origin), volume_before=volume_before, volume_after=volume_after
        )
    return pieces


def draft_invoice(
    session: Session,
    account_id: str,
    period: Period,
    records: list[UsageRecord],
    book: PriceBook,
    *,
    as_of: datetime,
) -> InvoiceDraft:
    """The invoice ``records`` (unbilled, in ledger order) would get on ``period``; reads only.

    The currency is the lines' currency, else that of the version in effect at the last record,
    else at ``as_of`` (no usage). Raises ConflictError for usage priced in several currencies,
    and UnpricedModelError / NoScheduleInEffectError when a record has no price.
    """
    pieces = rate_invoice_usage(session, account_id, period, records, book)
    drafts = line_drafts(pieces)
    currencies = {draft.currency for draft in drafts} or {
        book.at(records[-1].created_at if records else as_of).currency
    }
    if len(currencies) != 1:
        raise ConflictError(f"account {account_id} has usage priced in several currencies: {currencies}")
    # stable sort: the period's own lines first, adjustments after, each in line_drafts order
    ordered = sorted(drafts, key=lambda draft: draft.key.origin_period != str(period))
    lines = tuple(_line(number, draft, period) for number, draft in enumerate(ordered, start=1))
    currency = currencies.pop()
    subtotal_minor = sum(line.amount_minor for line in lines)
    subtotal_amount = add(*(piece.amount for piece in pieces))
    credit = credit_for_records(session, account_id, records, currency, subtotal_amount)
    # Lines round one by one, so their sum can be a cent below the rounded credit: cap it there.
    credit_minor = min(round_to_minor(credit, currency), max(0, subtotal_minor))
    return InvoiceDraft(
        account_id=account_id,
        period=period,
        currency=currency,
        lines=lines,
        subtotal_minor=subtotal_minor,
        credit_amount=credit,
        credit_minor=credit_minor,
        total_minor=subtotal_minor - credit_minor,
        total_amount=EXACT.subtract(subtotal_amount, credit),
    )


def _line(number: int, draft: LineDraft, period: Period) -> InvoiceLineDraft:
    return InvoiceLineDraft(
        line_number=number,
        origin_period=draft.key.origin_period,
        is_adjustment=draft.key.origin_period != str(period),
        price_version=draft.key.price_version,
        model=draft.key.model,
        token_class=draft.key.token_class,
        context_tier=draft.key.context_tier,
        price_tier=draft.key.tier_number,
        repriced_from_tier=draft.key.repriced_from_tier,
        tokens=draft.tokens,
        unit_price=draft.unit_price,
        amount=draft.amount,
        amount_minor=draft.amount_minor,
        currency=draft.currency,
    )

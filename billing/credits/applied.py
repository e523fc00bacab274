"""Credit on the invoice: what the grants paid of the usage an invoice bills.

The draw-down pays each request's marginal cost as it is recorded; the invoice re-rates the month
and is authoritative. It deducts what the grants paid for exactly the usage records it bills (so
every draw is deducted once, on the invoice that bills its record), at most the invoice's exact
total: credit never makes an invoice negative. The deduction is one line, rounded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import ZERO, add
from hybatch.models import CreditDraw, CreditGrant, UsageRecord


def credit_for_records(
    session: Session, account_id: str, records: Sequence[UsageRecord], currency: str, total_amount: Decimal
) -> Decimal:
    """Exact credit to deduct from an invoice of ``total_amount`` (major units) billing ``records``."""
    if not records:
        return ZERO
    billed = {(record.batch_id, record.custom_id) for record in records}
    batch_ids = sorted({batch_id for batch_id, _ in billed})
    drawn = []
    for start in range(0, len(batch_ids), 500):  # bounded IN lists
        rows = session.execute(
            sa.select(CreditDraw.batch_id, CreditDraw.custom_id, CreditDraw.amount)
            .join(CreditGrant, CreditGrant.id == CreditDraw.grant_id)
            .where(
                CreditDraw.account_id == account_id,
                CreditDraw.batch_id.in_(batch_ids[start : start + 500]),
                CreditGrant.currency == currency,
            )
        )
        drawn += [amount for batch_id, custom_id, amount in rows if (batch_id, custom_id) in billed]
    return max(ZERO, min(add(*drawn), total_amount))

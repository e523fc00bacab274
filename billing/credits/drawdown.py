"""The draw-down: a recorded request's cost is paid from the account's grants, in draw order.

Called by the worker in the transaction that records the request's output line and usage record
(before its commit), under the account's lock: a request draws at most once (if its usage record
already exists it was drawn when that was written) and never more than the live grants have left.
A request admitted by its hold always fits, since its real cost is at most its worst case; were
it not covered (a grant expired while it ran), the uncovered rest is left to the invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.credits.balance import CreditBalance, credit_balance
from billing.credits.holds import lock_account, release_hold
from billing.money import EXACT, ZERO
from hybatch.models import CreditDraw, CreditGrant, UsageRecord, utc_now


@dataclass(frozen=True)
class Drawdown:
    """What a request drew: per grant, and what no grant covered; the balance before and after."""

    draws: tuple[tuple[str, Decimal], ...]  # (grant id, exact amount) in draw order
    uncovered: Decimal
    before: CreditBalance
    after: CreditBalance


def draw_credits(
    session: Session,
    *,
    account_id: str,
    batch_id: str,
    custom_id: str,
    amount: Decimal,
    currency: str,
    at: datetime | None = None,
) -> Drawdown | None:
    """Pay ``amount`` (major units, exact) of the request from the account's live grants and drop
    its hold; does not commit. None when nothing is drawn: the account is not prepaid, or the
    request is already recorded. A currency other than the grants' is left uncovered."""
    at = at or utc_now()
    lock_account(session, account_id)
    already_recorded = session.scalar(
        sa.select(UsageRecord.id).where(UsageRecord.batch_id == batch_id, UsageRecord.custom_id == custom_id)
    )
    if already_recorded is not None:
        return None
    release_hold(session, batch_id, custom_id)
    before = credit_balance(session, account_id, at)
    if before is None:
        return None
    left = amount if currency == before.currency else ZERO
    draws = []
    for grant in before.grants:
        if left <= 0:
            break
        take = min(grant.remaining, left)
        if not grant.is_live or take <= 0:
            continue
        draws.append((grant.grant_id, take))
        left = EXACT.subtract(left, take)
    drawn_before = {grant.grant_id: grant.drawn for grant in before.grants}
    for grant_id, take in draws:
        session.execute(
            sa.update(CreditGrant)
            .where(CreditGrant.id == grant_id)
            .values(drawn=EXACT.add(drawn_before[grant_id], take))
        )
        session.add(
            CreditDraw(
                batch_id=batch_id,
                custom_id=custom_id,
                grant_id=grant_id,
                account_id=account_id,
                amount=take,
                created_at=at,
            )
        )
    session.flush()
    uncovered = amount if currency != before.currency else left
    return Drawdown(tuple(draws), uncovered, before, credit_balance(session, account_id, at))

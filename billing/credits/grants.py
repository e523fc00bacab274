"""Granting prepaid credit to an account (``hybatch credits grant``).

A grant is an amount in whole minor units of one currency (an account's grants share one), with
an optional expiry and a priority. It is never edited: a mistake is corrected by another grant or
left to expire. An account becomes prepaid with its first grant (see ``billing.credits.balance``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import MINOR_UNIT_EXPONENTS, places
from hybatch.errors import InvalidRequestError
from hybatch.ids import new_id
from hybatch.models import CreditGrant, utc_now

MAX_GRANT = Decimal("1000000000")  # a typo guard: 1e9 major units


def grant_credits(
    session: Session,
    account_id: str,
    *,
    amount: Decimal,
    currency: str,
    expires_at: datetime | None = None,
    priority: int = 0,
    note: str | None = None,
    now: datetime | None = None,
) -> CreditGrant:
    """Add a grant of ``amount`` (major units) to the account; does not commit.

    Raises InvalidRequestError naming every problem at once: an unknown currency, an amount that is
    not positive, has more places than the currency's minor unit or is implausibly large, an expiry
    not in the future, or a currency other than that of the account's earlier grants.
    """
    now = now or utc_now()
    currency = currency.lower()
    problems = []
    if currency not in MINOR_UNIT_EXPONENTS:
        problems.append(f"unknown currency {currency!r}")
    elif places(amount) > MINOR_UNIT_EXPONENTS[currency]:
        problems.append(f"amount {amount} has more places than a {currency} minor unit")
    if not amount.is_finite() or amount <= 0 or amount > MAX_GRANT:
        problems.append(f"amount must be positive and at most {MAX_GRANT}, not {amount}")
    if expires_at is not None and expires_at <= now:
        problems.append(f"expires_at {expires_at.isoformat()} is not in the future")
    earlier = session.scalar(
        sa.select(CreditGrant.currency).where(CreditGrant.account_id == account_id).limit(1)
    )
    if earlier is not None and earlier != currency:
        problems.append(f"the account's credit is in {earlier}, not {currency}")
    if problems:
        raise InvalidRequestError("; ".join(problems), code="invalid_credit_grant", param="amount")
    grant = CreditGrant(
        id=new_id("cg_"),
        account_id=account_id,
        currency=currency,
        amount=amount,
        priority=priority,
        expires_at=expires_at,
        note=note,
        created_at=now,
    )
    session.add(grant)
    session.flush()
    return grant

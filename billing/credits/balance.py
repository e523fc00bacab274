"""An account's credit balance: what each grant has left, what running requests hold.

``remaining`` of a grant = its amount - what was drawn from it (``CreditGrant.drawn``, the exact sum
of its draws, kept by the draw-down; major units). A grant is live until
``expires_at``; what an expired grant has left is forfeited, never drawn. The balance is the sum of
the live grants' remaining amounts; ``spendable`` subtracts the holds of requests still running
(``billing.credits.holds``), and is what admission compares a request's worst case with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import EXACT, ZERO, add
from hybatch.batch_lifecycle import UNFINISHED
from hybatch.models import Batch, CreditGrant, CreditHold, utc_now


@dataclass(frozen=True)
class GrantBalance:
    grant_id: str
    amount: Decimal  # granted, major units
    drawn: Decimal  # exact sum of its draws
    priority: int
    expires_at: datetime | None
    created_at: datetime
    is_live: bool  # not expired at the balance's moment

    @property
    def remaining(self) -> Decimal:
        return EXACT.subtract(self.amount, self.drawn)


@dataclass(frozen=True)
class CreditBalance:
    account_id: str
    currency: str
    as_of: datetime
    grants: tuple[GrantBalance, ...]  # in draw order
    held: Decimal  # worst cases of admitted requests not yet recorded

    @property
    def balance(self) -> Decimal:
        """What the live grants have left (exact)."""
        return add(*(grant.remaining for grant in self.grants if grant.is_live))

    @property
    def spendable(self) -> Decimal:
        return EXACT.subtract(self.balance, self.held)

    @property
    def granted(self) -> Decimal:
        return add(*(grant.amount for grant in self.grants))

    @property
    def drawn(self) -> Decimal:
        return add(*(grant.drawn for grant in self.grants))

    @property
    def forfeited(self) -> Decimal:
        """What expired grants had left."""
        return add(*(grant.remaining for grant in self.grants if not grant.is_live))

    @property
    def latest_grant_id(self) -> str:
        return max(self.grants, key=lambda grant: (grant.created_at, grant.grant_id)).grant_id


def draw_order(grant: GrantBalance) -> tuple:
    """Lower priority first, then the earliest expiry (none last), then the oldest grant."""
    expiry = grant.expires_at
    return (grant.priority, expiry is None, expiry or grant.created_at, grant.created_at, grant.grant_id)


def is_prepaid(session: Session, account_id: str) -> bool:
    """True once the account has a credit grant (live or not)."""
    return (
        session.scalar(sa.select(CreditGrant.id).where(CreditGrant.account_id == account_id).limit(1))
        is not None
    )


def credit_balance(session: Session, account_id: str, at: datetime | None = None) -> CreditBalance | None:
    """The account's balance at ``at`` (default now); None for an account with no grant. Reads only."""
    at = at or utc_now()
    rows = session.scalars(
        # populate_existing: a draw in this transaction has just added to ``drawn``
        sa.select(CreditGrant)
        .where(CreditGrant.account_id == account_id)
        .execution_options(populate_existing=True)
    ).all()
    if not rows:
        return None
    grants = sorted(
        (
            GrantBalance(
                grant_id=row.id,
                amount=row.amount,
                drawn=row.drawn,
                priority=row.priority,
                expires_at=row.expires_at,
                created_at=row.created_at,
                is_live=row.expires_at is None or row.expires_at > at,
            )
            for row in rows
        ),
        key=draw_order,
    )
    held = session.scalars(
        sa.select(CreditHold.amount)
        .join(Batch, Batch.id == CreditHold.batch_id)
        .where(CreditHold.account_id == account_id, Batch.status.in_(UNFINISHED))
    ).all()
    return CreditBalance(account_id, rows[0].currency, at, tuple(grants), add(ZERO, *held))

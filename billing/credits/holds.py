"""Holds: a prepaid or hard-limited account admits a request only if its worst-case cost still fits.

Admission and the draw-down both run under a lock on the account's row, so requests admitted by
several workers at once never hold more than the balance: each hold is the request's worst case
(every prompt token a cache miss plus ``max_tokens`` of output) and counts until the request is
recorded (``billing.credits.drawdown`` replaces it with the real cost) or ends without output. A
hold of a batch that ended no longer counts; a request offered again (a shard taken over after a
worker died) replaces its own earlier hold. The same holds count against the hard spend limits of
the account and the batch's key (``billing.limits.spend_limits``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.alerts import alert_credit_short
from billing.credits.balance import credit_balance
from billing.limits.spend_limits import SPEND_LIMIT_REACHED, limit_room
from billing.money import EXACT
from hybatch.models import Account, CreditHold, utc_now

INSUFFICIENT_CREDITS = "insufficient_credits"  # the error code of a request the balance cannot cover


def lock_account(session: Session, account_id: str) -> None:
    """Take the account's row lock (Postgres) or the write lock (SQLite) until the transaction ends."""
    session.execute(sa.update(Account).where(Account.id == account_id).values(name=Account.name))


@dataclass(frozen=True)
class HoldResult:
    held: frozenset[str]  # custom ids admitted (their holds written)
    refused: dict[str, str]  # the others: custom id -> error code (insufficient_credits, spend_limit_reached)


def hold_credit(
    session: Session,
    *,
    account_id: str,
    batch_id: str,
    api_key_id: str | None,
    candidates: Sequence[tuple[str, Decimal]],
    at: datetime | None = None,
) -> HoldResult:
    """Hold the worst case of every candidate ``(custom_id, worst_case)`` that still fits both the
    credit (a prepaid account) and the hard limits (of the account and ``api_key_id``), in order,
    passing over those that do not. A candidate that exceeds the whole balance can never fit and
    raises the ``credits.depleted`` alert (``billing.alerts.alert_credit_short``). Does not commit
    (the caller's commit ends the lock)."""
    at = at or utc_now()
    lock_account(session, account_id)
    session.execute(
        sa.delete(CreditHold).where(
            CreditHold.batch_id == batch_id,
            CreditHold.custom_id.in_([custom_id for custom_id, _ in candidates]),
        )
    )
    balance = credit_balance(session, account_id, at)
    credit_room = None if balance is None else balance.spendable
    limit = limit_room(session, account_id, api_key_id, at)
    spend_room = None if limit is None else limit[0]
    held: set[str] = set()
    refused: dict[str, str] = {}
    never_fits: Decimal | None = None  # the first worst case above the whole balance
    for custom_id, worst_case in candidates:
        if credit_room is not None and worst_case > credit_room:
            refused[custom_id] = INSUFFICIENT_CREDITS
            if never_fits is None and worst_case > balance.balance:
                never_fits = worst_case
            continue
        if spend_room is not None and worst_case > spend_room:
            refused[custom_id] = SPEND_LIMIT_REACHED
            continue
        credit_room = None if credit_room is None else EXACT.subtract(credit_room, worst_case)
        spend_room = None if spend_room is None else EXACT.subtract(spend_room, worst_case)
        session.add(
            CreditHold(
                batch_id=batch_id,
                custom_id=custom_id,
                account_id=account_id,
                amount=worst_case,
                created_at=at,
            )
        )
        held.add(custom_id)
    if never_fits is not None:  # it can never fit, whatever settles: say so (once, not per request)
        alert_credit_short(session, balance, never_fits)
    session.flush()
    return HoldResult(frozenset(held), refused)


def release_hold(session: Session, batch_id: str, custom_id: str) -> None:
    """Drop a request's hold (it ended without output, or its real cost is being drawn)."""
    session.execute(
        sa.delete(CreditHold).where(CreditHold.batch_id == batch_id, CreditHold.custom_id == custom_id)
    )

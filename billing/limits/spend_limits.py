"""Monthly spend limits per account and per API key: soft (an alert) and hard (a stop).

A limit's scope is the whole account or one of its keys; each has an optional ``soft`` and an
optional ``hard`` amount in the account's currency (major units) per calendar month (UTC). The
month's spend of a scope is what its requests cost as recorded (the ledger's ``amount``, what their
lines' ``x_billing`` say), so it is known the moment a request is recorded; the invoice re-rates the
month and may differ slightly (docs/billing.md). ``held`` is the worst case of the scope's requests
admitted and still running (``billing.credits.holds``).

- soft: the first request that brings the month's spend to the limit or past it raises a
  ``spend_limit.soft_reached`` alert (once per scope and month).
- hard: once the month's spend reaches it, new batches are refused at creation
  (``billing_hard_limit_reached``); running batches admit a request only if its worst case fits in
  ``hard - spent - held`` (the rest end as ``spend_limit_reached`` error lines, unbilled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import EXACT, MINOR_UNIT_EXPONENTS, ZERO, add, places
from billing.money_text import exact_amount
from billing.periods import Period
from hybatch.batch_lifecycle import UNFINISHED
from hybatch.errors import InvalidRequestError
from hybatch.models import ApiKey, Batch, CreditHold, SpendLimit, UsageRecord, utc_now

ACCOUNT_SCOPE = "account"  # SpendLimit.scope of an account-wide limit; a key's is its id
HARD_LIMIT_REACHED = "billing_hard_limit_reached"  # batch creation refused (OpenAI's code)
SPEND_LIMIT_REACHED = "spend_limit_reached"  # a request a running batch did not admit


@dataclass(frozen=True)
class LimitState:
    """One limit and where its scope stands this month."""

    scope: str  # "account" or an API key id
    key_prefix: str | None  # the visible start of that key, as its owner knows it (None: the account)
    soft: Decimal | None
    hard: Decimal | None
    currency: str
    period: Period
    spent: Decimal  # recorded this month, exact
    held: Decimal  # worst cases of running requests

    @property
    def room(self) -> Decimal | None:
        """What may still be admitted under the hard limit (None: no hard limit)."""
        return None if self.hard is None else EXACT.subtract(EXACT.subtract(self.hard, self.spent), self.held)

    @property
    def label(self) -> str:
        """``the account`` or ``API key hb-3xQ…`` (named by its prefix, as the dashboard shows keys:
        its owner never sees the key's id)."""
        if self.scope == ACCOUNT_SCOPE:
            return "the account"
        return f"API key {self.key_prefix}…" if self.key_prefix else f"API key {self.scope}"


def _check_amount(name: str, value: Decimal | None, currency: str, problems: list[str]) -> None:
    if value is None:
        return
    if not value.is_finite() or value <= 0:
        problems.append(f"{name} must be positive, not {value}")
    elif places(value) > MINOR_UNIT_EXPONENTS.get(currency, 2):
        problems.append(f"{name} {value} has more places than a {currency} minor unit")


def set_limit(
    session: Session,
    account_id: str,
    *,
    api_key_id: str | None,
    soft: Decimal | None,
    hard: Decimal | None,
    currency: str,
) -> SpendLimit:
    """Set (or with both None, remove) the monthly limits of the account or one of its keys; does
    not commit. Raises InvalidRequestError naming every problem at once."""
    problems: list[str] = []
    _check_amount("soft", soft, currency, problems)
    _check_amount("hard", hard, currency, problems)
    if soft is not None and hard is not None and soft > hard:
        problems.append(f"soft {soft} is above hard {hard}")
    if problems:
        raise InvalidRequestError("; ".join(problems), code="invalid_spend_limit", param="limit")
    scope = api_key_id or ACCOUNT_SCOPE
    row = session.scalar(
        sa.select(SpendLimit).where(SpendLimit.account_id == account_id, SpendLimit.scope == scope)
    )
    if row is None:
        row = SpendLimit(account_id=account_id, scope=scope, currency=currency, created_at=utc_now())
        session.add(row)
    row.soft, row.hard, row.currency, row.updated_at = soft, hard, currency, utc_now()
    if soft is None and hard is None:
        session.delete(row)
    session.flush()
    return row


def _month_spend(session: Session, account_id: str, scope: str, currency: str, period: Period) -> Decimal:
    query = sa.select(UsageRecord.amount).where(
        UsageRecord.account_id == account_id,
        UsageRecord.created_at >= period.start,
        UsageRecord.created_at < period.end,
        UsageRecord.currency == currency,
    )
    if scope != ACCOUNT_SCOPE:
        query = query.where(UsageRecord.api_key_id == scope)
    # Amounts are exact decimal text: summed here, never by the database as floats.
    return add(ZERO, *(amount for amount in session.scalars(query) if amount is not None))


def _held(session: Session, account_id: str, scope: str) -> Decimal:
    query = (
        sa.select(CreditHold.amount)
        .join(Batch, Batch.id == CreditHold.batch_id)
        .where(CreditHold.account_id == account_id, Batch.status.in_(UNFINISHED))
    )
    if scope != ACCOUNT_SCOPE:
        query = query.where(Batch.api_key_id == scope)
    return add(ZERO, *session.scalars(query))


def limit_states(
    session: Session, account_id: str, api_key_id: str | None, at: datetime | None = None
) -> list[LimitState]:
    """The limits that apply to a request of ``api_key_id`` (the account's and the key's; all the
    account's when None), each with this month's spend and holds. Reads only."""
    at = at or utc_now()
    period = Period.containing(at)
    query = sa.select(SpendLimit).where(SpendLimit.account_id == account_id)
    if api_key_id is not None:
        query = query.where(SpendLimit.scope.in_([ACCOUNT_SCOPE, api_key_id]))
    rows = session.scalars(query.order_by(SpendLimit.scope)).all()
    key_ids = [row.scope for row in rows if row.scope != ACCOUNT_SCOPE]
    prefixes = (
        dict(session.execute(sa.select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(key_ids))).all())
        if key_ids
        else {}
    )
    states = []
    for row in rows:
        states.append(
            LimitState(
                scope=row.scope,
                key_prefix=prefixes.get(row.scope),
                soft=row.soft,
                hard=row.hard,
                currency=row.currency,
                period=period,
                spent=_month_spend(session, account_id, row.scope, row.currency, period),
                held=_held(session, account_id, row.scope),
            )
        )
    return states


def limits_in_force(session: Session, account_id: str, api_key_id: str | None) -> tuple[bool, bool]:
    """(any limit, any hard limit) for requests of ``api_key_id`` on the account. Reads only."""
    scopes = [ACCOUNT_SCOPE] + ([api_key_id] if api_key_id else [])
    hards = list(
        session.scalars(
            sa.select(SpendLimit.hard).where(
                SpendLimit.account_id == account_id, SpendLimit.scope.in_(scopes)
            )
        )
    )
    return bool(hards), any(hard is not None for hard in hards)


def check_batch_creation(
    session: Session, account_id: str, api_key_id: str | None, at: datetime | None = None
) -> None:
    """Refuse a new batch when a hard limit of the account or the key is reached this month:
    InvalidRequestError with code ``billing_hard_limit_reached`` naming the limit. Reads only."""
    for state in limit_states(session, account_id, api_key_id, at):
        if state.hard is not None and state.spent >= state.hard:
            raise InvalidRequestError(
                f"The monthly hard spend limit of {state.label} is reached: "
                f"{exact_amount(state.hard, state.currency)} {state.currency}, "
                f"{exact_amount(state.spent, state.currency)} {state.currency} spent in {state.period}. "
                "Ask the operator to raise it (hybatch limits set).",
                code=HARD_LIMIT_REACHED,
            )


def limit_room(
    session: Session, account_id: str, api_key_id: str | None, at: datetime | None = None
) -> tuple[Decimal, LimitState] | None:
    """The tightest hard-limit room for a request of ``api_key_id``, with its limit; None without a
    hard limit."""
    rooms = [
        (state.room, state)
        for state in limit_states(session, account_id, api_key_id, at)
        if state.room is not None
    ]
    return min(rooms, key=lambda pair: pair[0]) if rooms else None

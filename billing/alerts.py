"""Billing alerts: a threshold an account crossed, recorded once and sent to its webhooks.

Each alert has a ``dedupe_key`` that says which crossing it is, so a threshold crossed again by
the same episode is not alerted twice: for credits the latest grant (a new grant re-arms both
alerts), for spend limits the month and the limit. An alert is a row (the dashboard lists them)
and a webhook event of the same type (``hybatch.webhooks``), written in the caller's transaction.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.credits.balance import CreditBalance
from billing.limits.spend_limits import LimitState
from billing.money import EXACT, MINOR_UNIT_EXPONENTS, decimal_string
from billing.money_text import exact_amount
from billing.sql import insert_ignoring_conflicts
from hybatch import webhooks
from hybatch.ids import new_id
from hybatch.models import BillingAlert, utc_now

CREDITS_LOW = "credits.low_balance"
CREDITS_DEPLETED = "credits.depleted"
SOFT_LIMIT_REACHED = "spend_limit.soft_reached"


def record_alert(
    session: Session, account_id: str, kind: str, dedupe_key: str, message: str, data: dict
) -> bool:
    """Record the alert unless this crossing already was; True when new (then its webhook event is
    queued too). Does not commit."""
    alert_id = new_id("alert_")
    now = utc_now()
    inserted = insert_ignoring_conflicts(
        session,
        BillingAlert,
        {
            "id": alert_id,
            "account_id": account_id,
            "kind": kind,
            "dedupe_key": dedupe_key,
            "message": message[:500],
            "created_at": now,
        },
    )
    if inserted:
        webhooks.record_account_event(session, account_id, kind, {"id": alert_id, "message": message, **data})
    return inserted


def check_credit_alerts(session: Session, after: CreditBalance, low_balance: Decimal) -> list[str]:
    """Alert when the balance is at or below ``low_balance`` (major units) and when it is used up:
    less than one minor unit left (requests draw their exact cost, and admission never lets one run
    past the balance, so a balance seldom lands on exactly zero). Returns the kinds newly alerted."""
    balance, currency = after.balance, after.currency
    data = {"balance": decimal_string(balance), "currency": currency}
    key = after.latest_grant_id
    kinds = []
    if balance <= low_balance and record_alert(
        session,
        after.account_id,
        CREDITS_LOW,
        key,
        f"Credit balance {exact_amount(balance, currency)} {currency} is at or below "
        f"{exact_amount(low_balance, currency)} {currency}.",
        data,
    ):
        kinds.append(CREDITS_LOW)
    smallest = Decimal(1).scaleb(-MINOR_UNIT_EXPONENTS.get(currency, 2))
    if balance < smallest and record_alert(
        session,
        after.account_id,
        CREDITS_DEPLETED,
        key,
        f"Credits used up: {exact_amount(balance, currency)} {currency} left, less than "
        f"{exact_amount(smallest, currency)} {currency}.",
        data,
    ):
        kinds.append(CREDITS_DEPLETED)
    return kinds


def alert_credit_short(session: Session, balance: CreditBalance, worst_case: Decimal) -> bool:
    """The ``credits.depleted`` alert for a request whose worst case (major units) is more than the
    whole balance: no request that is running can change that (they only draw), so it ends as
    ``insufficient_credits`` unless credit is granted. Once per grant, like the zero alert; True when
    new. Does not commit."""
    currency = balance.currency
    return record_alert(
        session,
        balance.account_id,
        CREDITS_DEPLETED,
        balance.latest_grant_id,
        f"Credits used up: the balance of {exact_amount(balance.balance, currency)} {currency} does not "
        f"cover a request's worst case of {exact_amount(worst_case, currency)} {currency}; such requests "
        "end as insufficient_credits until credit is granted.",
        {"balance": decimal_string(balance.balance), "currency": currency},
    )


def check_soft_limits(
    session: Session, account_id: str, states: list[LimitState], pending: Decimal
) -> list[str]:
    """Alert each soft limit that this month's spend plus ``pending`` (the request being recorded,
    major units) reaches; once per limit and month. Returns the scopes newly alerted."""
    alerted = []
    for state in states:
        if state.soft is None:
            continue
        spent = EXACT.add(state.spent, pending)
        if spent < state.soft:
            continue
        message = (
            f"The monthly soft spend limit of {state.label} is reached: "
            f"{exact_amount(state.soft, state.currency)} {state.currency}, "
            f"{exact_amount(spent, state.currency)} {state.currency} spent in {state.period}."
        )
        data = {
            "scope": state.scope,
            "period": str(state.period),
            "soft_limit": decimal_string(state.soft),
            "spent": decimal_string(spent),
            "currency": state.currency,
        }
        if record_alert(
            session, account_id, SOFT_LIMIT_REACHED, f"{state.period}:{state.scope}", message, data
        ):
            alerted.append(state.scope)
    return alerted


def recent_alerts(session: Session, account_id: str, limit: int = 20) -> list[BillingAlert]:
    return list(
        session.scalars(
            sa.select(BillingAlert)
            .where(BillingAlert.account_id == account_id)
            .order_by(BillingAlert.created_at.desc(), BillingAlert.id)
            .limit(limit)
        )
    )

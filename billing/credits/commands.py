"""The ``hybatch credits grant|balance`` commands as plain functions (the CLI imports this module).

Each opens its own unit of work from the settings and returns the lines to print; failures are
``HybatchError``s carrying a message for the operator.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from billing.credits.balance import credit_balance
from billing.credits.grants import grant_credits
from billing.money_text import exact_amount
from billing.usage.buckets import account_currency
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.errors import InvalidRequestError
from hybatch.settings import Settings


def _session_factory(settings: Settings):
    return make_session_factory(make_engine(settings.database_url))


def grant(
    settings: Settings,
    account_name: str,
    amount_text: str,
    expires_text: str | None,
    priority: int,
    currency: str | None,
) -> list[str]:
    """Grant prepaid credit: ``amount_text`` major units (``10.00``), usable through the UTC day
    ``expires_text`` (YYYY-MM-DD; it expires at the next midnight) or forever. The currency
    defaults to the account's earlier grants', else its price schedule's."""
    try:
        amount = Decimal(amount_text)
    except InvalidOperation as error:
        raise InvalidRequestError(
            f"--amount {amount_text!r} is not a decimal number", param="amount"
        ) from error
    expires_at = None
    if expires_text is not None:
        try:
            day = date.fromisoformat(expires_text)
        except ValueError as error:
            raise InvalidRequestError(
                f"--expires {expires_text!r} is not YYYY-MM-DD", param="expires"
            ) from error
        expires_at = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    with unit_of_work(_session_factory(settings)) as session:
        account = accounts.get_account(session, account_name)
        now = datetime.now(UTC)
        existing = credit_balance(session, account.id, now)
        if currency is None:
            currency = existing.currency if existing else account_currency(session, account.id, now)
        made = grant_credits(
            session,
            account.id,
            amount=amount,
            currency=currency,
            expires_at=expires_at,
            priority=priority,
            now=now,
        )
        after = credit_balance(session, account.id, now)
    until = (
        f", usable through {expires_text} UTC: it expires {expires_at:%Y-%m-%d %H:%M} UTC"
        if expires_at
        else ""
    )
    return [
        f"granted {exact_amount(amount, made.currency)} {made.currency} to {account_name} "
        f"({made.id}, priority {priority}{until})",
        f"balance: {exact_amount(after.balance, after.currency)} {after.currency}",
    ]


def balance(settings: Settings, account_name: str) -> list[str]:
    """The account's credit balance and each grant, in draw order."""
    with _session_factory(settings)() as session:
        account = accounts.get_account(session, account_name)
        state = credit_balance(session, account.id)
    if state is None:
        return [f"{account_name} has no credit grants (it is billed after use)"]
    currency = state.currency
    out = [
        f"{account_name}: balance {exact_amount(state.balance, currency)} {currency} (held by running "
        f"requests {exact_amount(state.held, currency)}, spendable {exact_amount(state.spendable, currency)})"
    ]
    for grant_state in state.grants:
        expiry = grant_state.expires_at.strftime("%Y-%m-%d %H:%M UTC") if grant_state.expires_at else "never"
        status = "" if grant_state.is_live else "  (expired)"
        out.append(
            f"  {grant_state.grant_id}  granted {exact_amount(grant_state.amount, currency)}  drawn "
            f"{exact_amount(grant_state.drawn, currency)}  left {exact_amount(grant_state.remaining, currency)}  "
            f"priority {grant_state.priority}  expires {expiry}{status}"
        )
    return out

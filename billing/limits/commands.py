"""The ``hybatch limits set|show`` commands as plain functions (the CLI imports this module).

Each opens its own unit of work from the settings and returns the lines to print; failures are
``HybatchError``s carrying a message for the operator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from billing.limits.spend_limits import ACCOUNT_SCOPE, limit_states, set_limit
from billing.money_text import exact_amount
from billing.usage.buckets import account_currency
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.errors import InvalidRequestError
from hybatch.models import ApiKey
from hybatch.settings import Settings


def _session_factory(settings: Settings):
    return make_session_factory(make_engine(settings.database_url))


def _optional_amount(text: str | None, option: str) -> Decimal | None:
    if text is None or text.lower() == "none":
        return None
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise InvalidRequestError(f"{option} {text!r} is not a decimal number", param=option) from error


def set_limits(
    settings: Settings,
    account_name: str,
    key_prefix: str | None,
    soft_text: str | None,
    hard_text: str | None,
) -> list[str]:
    """Set the monthly soft and hard spend limits of the account, or of one of its keys (by the
    key's visible prefix); ``none`` for both removes them."""
    with unit_of_work(_session_factory(settings)) as session:
        account = accounts.get_account(session, account_name)
        api_key_id = None
        if key_prefix is not None:
            key = session.scalar(
                sa.select(ApiKey).where(
                    ApiKey.account_id == account.id,
                    ApiKey.prefix == key_prefix.removesuffix("...").removesuffix("…"),
                )
            )
            if key is None:
                raise InvalidRequestError(f"{account_name} has no API key {key_prefix}", param="key")
            api_key_id = key.id
        soft, hard = _optional_amount(soft_text, "--soft"), _optional_amount(hard_text, "--hard")
        currency = account_currency(session, account.id, datetime.now(UTC))
        set_limit(session, account.id, api_key_id=api_key_id, soft=soft, hard=hard, currency=currency)
    scope = f"key {key_prefix}" if key_prefix else account_name
    if soft is None and hard is None:
        return [f"removed the spend limits of {scope}"]
    shown = ", ".join(
        f"{name} {exact_amount(value, currency)} {currency}"
        for name, value in (("soft", soft), ("hard", hard))
        if value
    )
    return [f"monthly spend limits of {scope}: {shown}"]


def show_limits(settings: Settings, account_name: str) -> list[str]:
    """Every spend limit of the account with this month's spend and holds."""
    with _session_factory(settings)() as session:
        account = accounts.get_account(session, account_name)
        states = limit_states(session, account.id, None)
    if not states:
        return [f"{account_name} has no spend limits"]
    out = []
    for state in states:
        scope = account_name if state.scope == ACCOUNT_SCOPE else f"key {state.key_prefix or state.scope}"
        soft = "-" if state.soft is None else exact_amount(state.soft, state.currency)
        hard = "-" if state.hard is None else exact_amount(state.hard, state.currency)
        out.append(
            f"{scope}: soft {soft}  hard {hard} {state.currency}  spent in {state.period} "
            f"{exact_amount(state.spent, state.currency)}  held {exact_amount(state.held, state.currency)}"
        )
    return out

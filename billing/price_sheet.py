"""The price sheet: the account's schedule version at a moment, as rows people can read.

One row per (model entry, context tier, token class), in the schedule's order (model entries
as written, context tiers shortest first, token classes cache hit, cache miss, output). Tier
ranges are written as the month's token numbers they price, 1-based and inclusive:
``first_token .. up_to`` (``up_to`` None: and beyond).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from billing.schedule import ScheduleVersion, TierMode, TierTable, TokenClass
from billing.schedules import price_book


@dataclass(frozen=True)
class PriceTierRow:
    first_token: int  # the first monthly token this tier prices (1-based)
    up_to: int | None  # the last one, inclusive; None: open-ended
    unit_price: Decimal  # per 1M tokens


@dataclass(frozen=True)
class PriceRow:
    model: str  # the schedule's match: an exact model name or an fnmatch pattern ("*")
    context_tier: str
    prompt_tokens_above: int  # the context tier holds prompts of (above, up_to] tokens
    prompt_tokens_up_to: int | None  # None: any longer prompt
    token_class: TokenClass
    mode: TierMode
    tiers: tuple[PriceTierRow, ...]


@dataclass(frozen=True)
class PriceSheet:
    account_id: str
    at: datetime
    schedule: str
    version: str
    price_version: str  # schedule@version, as on invoice lines and x_billing
    currency: str
    effective_from: datetime
    rows: tuple[PriceRow, ...]


def price_sheet(session: Session, account_id: str, at: datetime) -> PriceSheet:
    """The prices in force for ``account_id`` at ``at``.

    Raises NoScheduleInEffectError (code ``no_price_schedule``) when no version of the
    account's schedule has started by ``at``. May load the shipped default schedule.
    """
    version = price_book(session, account_id).at(at)
    return PriceSheet(
        account_id=account_id,
        at=at,
        schedule=version.schedule,
        version=version.version,
        price_version=version.price_version,
        currency=version.currency,
        effective_from=version.effective_from,
        rows=tuple(_rows(version)),
    )


def _rows(version: ScheduleVersion) -> list[PriceRow]:
    rows = []
    for entry in version.models:
        above = 0
        for context_tier in version.context_tiers:
            for token_class in TokenClass:
                table = entry.tables[(context_tier.name, token_class)]
                rows.append(
                    PriceRow(
                        model=entry.match,
                        context_tier=context_tier.name,
                        prompt_tokens_above=above,
                        prompt_tokens_up_to=context_tier.up_to_prompt_tokens,
                        token_class=token_class,
                        mode=table.mode,
                        tiers=_tier_rows(table),
                    )
                )
            if context_tier.up_to_prompt_tokens is not None:
                above = context_tier.up_to_prompt_tokens
    return rows


def _tier_rows(table: TierTable) -> tuple[PriceTierRow, ...]:
    rows = []
    previous_up_to = 0  # tier i prices the tokens (up_to[i-1], up_to[i]]
    for tier in table.tiers:
        rows.append(PriceTierRow(previous_up_to + 1, tier.up_to, tier.unit_price))
        if tier.up_to is not None:
            previous_up_to = tier.up_to
    return tuple(rows)

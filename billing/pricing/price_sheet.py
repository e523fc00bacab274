"""The price sheet: the account's schedule version at a moment, as rows people can read.

One row per (model entry, context tier, token class), in the schedule's order (model entries
as written, context tiers shortest first, token classes cache hit, cache miss, output). Tier
ranges are written as the month's token numbers they price, 1-based and inclusive:
``first_token .. up_to`` (``up_to`` None: and beyond). ``schedule_versions`` finds the versions
named on invoice lines, so a line's context tier and price tier can be written the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import (
    ScheduleVersion,
    TierMode,
    TierTable,
    TokenClass,
    UnpricedModelError,
)
from billing.pricing.version_document import version_from_document
from hybatch.models import PriceScheduleVersion


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
    served_model: str | None = None  # the model this service runs, when asked
    served_by: str | None = None  # the model entry (a row's ``model``) pricing it; None: unpriced


def price_sheet(
    session: Session, account_id: str, at: datetime, *, served_model: str | None = None
) -> PriceSheet:
    """The prices in force for ``account_id`` at ``at``; with ``served_model``, which entry prices it.

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
        served_model=served_model,
        served_by=_entry_pricing(version, served_model) if served_model else None,
    )


def schedule_versions(session: Session, price_versions: Iterable[str]) -> dict[str, ScheduleVersion]:
    """The loaded versions named ``schedule@version`` (as on invoice lines), by that name; reads only.

    Names that match no loaded version are left out.
    """
    wanted = {tuple(name.split("@", 1)) for name in price_versions if "@" in name}
    if not wanted:
        return {}
    rows = session.scalars(
        sa.select(PriceScheduleVersion).where(
            sa.tuple_(PriceScheduleVersion.schedule, PriceScheduleVersion.version).in_(wanted)
        )
    )
    versions = (version_from_document(row.document) for row in rows)
    return {version.price_version: version for version in versions}


def prompt_bounds(version: ScheduleVersion, context_tier: str) -> tuple[int, int | None]:
    """The context tier holds prompts of ``(above, up_to]`` tokens (``up_to`` None: any longer)."""
    above = 0
    for tier in version.context_tiers:
        if tier.name == context_tier:
            return above, tier.up_to_prompt_tokens
        above = tier.up_to_prompt_tokens or above
    raise KeyError(f"{version.price_version} has no context tier {context_tier!r}")


def tier_rows(
    version: ScheduleVersion, model: str, context_tier: str, token_class: TokenClass
) -> tuple[PriceTierRow, ...]:
    """The tiers pricing ``model``'s ``token_class`` in ``context_tier``, as monthly token ranges."""
    return _tier_rows(version.table(model, context_tier, token_class))


def _entry_pricing(version: ScheduleVersion, model: str) -> str | None:
    try:
        return version.prices_for(model).match
    except UnpricedModelError:
        return None


def _rows(version: ScheduleVersion) -> list[PriceRow]:
    rows = []
    for entry in version.models:
        for context_tier in version.context_tiers:
            above, up_to = prompt_bounds(version, context_tier.name)
            for token_class in TokenClass:
                table = entry.tables[(context_tier.name, token_class)]
                rows.append(
                    PriceRow(
                        model=entry.match,
                        context_tier=context_tier.name,
                        prompt_tokens_above=above,
                        prompt_tokens_up_to=up_to,
                        token_class=token_class,
                        mode=table.mode,
                        tiers=_tier_rows(table),
                    )
                )
    return rows


def _tier_rows(table: TierTable) -> tuple[PriceTierRow, ...]:
    rows = []
    previous_up_to = 0  # tier i prices the tokens (up_to[i-1], up_to[i]]
    for tier in table.tiers:
        rows.append(PriceTierRow(previous_up_to + 1, tier.up_to, tier.unit_price))
        if tier.up_to is not None:
            previous_up_to = tier.up_to
    return tuple(rows)

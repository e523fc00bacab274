"""A price schedule version as frozen data, and how a tier table prices a range of tokens.

A version prices every (model, context tier, token class) with a ``TierTable`` over the
account's monthly token volume of that same charge (see ``ChargeKey``). Tier bounds are
inclusive: tier ``i`` holds the units ``(up_to[i-1], up_to[i]]``, the last tier is open-ended.

- graduated: each unit is priced by the tier it falls in (units 1..1000 at tier 1, 1001.. at 2).
- volume: every unit of the month is priced by the tier the month's total volume falls in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from hybatch.errors import InvalidRequestError


class TokenClass(StrEnum):
    CACHE_HIT_INPUT = "cache_hit_input"
    CACHE_MISS_INPUT = "cache_miss_input"
    OUTPUT = "output"


class TierMode(StrEnum):
    GRADUATED = "graduated"
    VOLUME = "volume"


class UnpricedModelError(InvalidRequestError):
    """The schedule version in effect has no price for this model."""


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # inclusive upper bound of monthly tokens; None: open-ended (last tier only)
    unit_price: Decimal  # per 1M tokens


@dataclass(frozen=True)
class TierSlice:
    """Part of a token range priced by one tier."""

    tier_number: int  # 1-based
    tokens: int
    unit_price: Decimal


@dataclass(frozen=True)
class TierTable:
    mode: TierMode
    tiers: tuple[Tier, ...]

    def tier_number_for(self, volume: int) -> int:
        """The 1-based tier whose range holds unit number ``volume`` (0 counts as tier 1)."""
        for number, tier in enumerate(self.tiers, start=1):
            if tier.up_to is None or volume <= tier.up_to:
                return number
        raise AssertionError("a validated table ends with an open-ended tier")

    def slices(self, volume_before: int, tokens: int, period_volume: int) -> list[TierSlice]:
        """Price the units ``(volume_before, volume_before + tokens]`` of a month.

        ``period_volume`` is the month's whole volume of this charge; only volume mode reads it.
        """
        if tokens <= 0:
            return []
        if self.mode is TierMode.VOLUME:
            number = self.tier_number_for(period_volume)
            return [TierSlice(number, tokens, self.tiers[number - 1].unit_price)]
        pieces: list[TierSlice] = []
        first, last = volume_before, volume_before + tokens  # units (first, last]
        lower = 0
        for number, tier in enumerate(self.tiers, start=1):
            upper = last if tier.up_to is None else tier.up_to
            # units of this tier: (lower, upper]; of the range: (first, last]
            count = min(last, upper) - max(first, lower)
            if count > 0:
                pieces.append(TierSlice(number, count, tier.unit_price))
            if tier.up_to is None or tier.up_to >= last:
                break
            lower = tier.up_to
        return pieces

    @property
    def highest_price(self) -> Decimal:
        return max(tier.unit_price for tier in self.tiers)


@dataclass(frozen=True)
class ContextTier:
    """Requests whose prompt has at most ``up_to_prompt_tokens`` tokens (None: any longer)."""

    name: str
    up_to_prompt_tokens: int | None


@dataclass(frozen=True)
class ModelPrices:
    match: str  # an exact model name or an fnmatch pattern ("mimo-v2-*", "*")
    tables: Mapping[tuple[str, TokenClass], TierTable]  # (context tier name, token class)

    @property
    def is_pattern(self) -> bool:
        return any(char in self.match for char in "*?[")


@dataclass(frozen=True)
class ChargeKey:
    """What a tier table's monthly volume counts: one model, token class and context tier."""

    model: str
    token_class: TokenClass
    context_tier: str


@dataclass(frozen=True)
class ScheduleVersion:
    schedule: str
    version: str
    currency: str
    effective_from: datetime
    context_tiers: tuple[ContextTier, ...]
    models: tuple[ModelPrices, ...]

    @property
    def price_version(self) -> str:
        """The label stored on invoice lines and ``x_billing``: ``schedule@version``."""
        return f"{self.schedule}@{self.version}"

    def context_tier_for(self, prompt_tokens: int) -> ContextTier:
        for tier in self.context_tiers:
            if tier.up_to_prompt_tokens is None or prompt_tokens <= tier.up_to_prompt_tokens:
                return tier
        raise AssertionError("a validated schedule ends with an open-ended context tier")

    def prices_for(self, model: str) -> ModelPrices:
        """An exact entry for ``model`` wins; else the first pattern (file order) that matches."""
        for entry in self.models:
            if not entry.is_pattern and entry.match == model:
                return entry
        for entry in self.models:
            if entry.is_pattern and fnmatch.fnmatchcase(model, entry.match):
                return entry
        raise UnpricedModelError(
            f"price schedule {self.price_version} has no price for model {model!r}", code="unpriced_model"
        )

    def table(self, model: str, context_tier: str, token_class: TokenClass) -> TierTable:
        return self.prices_for(model).tables[(context_tier, token_class)]

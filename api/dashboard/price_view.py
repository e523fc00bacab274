"""The price sheet as a readable table: one row per model, prompt length and monthly volume band,
one column per token class (cache-hit input, cache-miss input, output).

Token classes may have different tier boundaries; rows then split at every boundary of any
class, so each cell is the exact price of that class for that band. Invoice lines name their
context tier and price tier by the schedule's ids (``upto_256k``, tier 2); ``line_labels`` writes
them in the price table's words ("up to 262,144 tokens", "over 1B"), from the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import Protocol

from api.dashboard import formatting
from billing.pricing.price_sheet import PriceRow, PriceSheet, prompt_bounds, tier_rows
from billing.pricing.schedule_version import ScheduleVersion, TokenClass, UnpricedModelError


def prompt_length_label(above: int, up_to: int | None) -> str:
    """Prompts of ``(above, up_to]`` tokens: ``up to 262,144 tokens``, ``over 262,144 tokens``."""
    if up_to is None:
        return f"over {formatting.integer(above)} tokens"
    if above == 0:
        return f"up to {formatting.integer(up_to)} tokens"
    return f"{formatting.integer(above + 1)}–{formatting.integer(up_to)} tokens"


def monthly_tokens_label(first_token: int, up_to: int | None) -> str:
    """The month's tokens ``first_token .. up_to`` (1-based, inclusive): ``first 1B``, ``over 1B``."""
    if up_to is None:
        return "any" if first_token == 1 else f"over {formatting.compact(first_token - 1)}"
    if first_token == 1:
        return f"first {formatting.compact(up_to)}"
    return f"{formatting.compact(first_token)}–{formatting.compact(up_to)}"


@dataclass(frozen=True)
class PriceBand:
    model: str  # "*" reads as "any other model"
    context_tier: str
    prompt_tokens_above: int
    prompt_tokens_up_to: int | None
    first_token: int  # of the month's volume of each class
    up_to: int | None
    modes: tuple[str, ...]  # distinct tier modes of the row's classes
    prices: dict[TokenClass, Decimal]  # per 1M tokens
    is_served: bool  # the entry that prices the model this service runs

    @property
    def prompt_length(self) -> str:
        return prompt_length_label(self.prompt_tokens_above, self.prompt_tokens_up_to)

    @property
    def monthly_tokens(self) -> str:
        return monthly_tokens_label(self.first_token, self.up_to)


def _price_for(row: PriceRow, token: int) -> Decimal:
    for tier in row.tiers:
        if tier.up_to is None or token <= tier.up_to:
            return tier.unit_price
    raise AssertionError("a validated tier table ends with an open-ended tier")


def price_bands(sheet: PriceSheet) -> list[PriceBand]:
    """``sheet``'s rows pivoted by token class, in the schedule's order."""
    bands = []
    for (model, context_tier), group in groupby(sheet.rows, key=lambda row: (row.model, row.context_tier)):
        rows = list(group)
        ends = sorted({tier.up_to for row in rows for tier in row.tiers if tier.up_to is not None})
        starts = [1] + [end + 1 for end in ends]
        for first_token, up_to in zip(starts, [*ends, None], strict=True):
            bands.append(
                PriceBand(
                    model=model,
                    context_tier=context_tier,
                    prompt_tokens_above=rows[0].prompt_tokens_above,
                    prompt_tokens_up_to=rows[0].prompt_tokens_up_to,
                    first_token=first_token,
                    up_to=up_to,
                    modes=tuple(dict.fromkeys(row.mode.value for row in rows)),
                    prices={row.token_class: _price_for(row, first_token) for row in rows},
                    is_served=model == sheet.served_by,
                )
            )
    return bands


class InvoiceLineLike(Protocol):
    """What ``line_labels`` reads of a stored ``InvoiceLine`` or an ``InvoiceLineDraft``."""

    line_number: int
    price_version: str
    model: str
    token_class: str
    context_tier: str
    price_tier: int
    repriced_from_tier: int | None


@dataclass(frozen=True)
class LineLabels:
    prompt_length: str  # as the price table's "Prompt length"
    monthly_tokens: str  # the price tier, as the price table's "Monthly tokens"


def line_labels(
    versions: dict[str, ScheduleVersion], lines: Iterable[InvoiceLineLike]
) -> dict[int, LineLabels]:
    """Each line's context tier and price tier in the price table's words, by line number.

    A line whose version is not loaded (or no longer names the tier) keeps the schedule's ids.
    """
    labels = {}
    for line in lines:
        version = versions.get(line.price_version)
        try:
            if version is None:
                raise KeyError(line.price_version)
            tiers = tier_rows(version, line.model, line.context_tier, TokenClass(line.token_class))
            tier = tiers[line.price_tier - 1]
            monthly = monthly_tokens_label(tier.first_token, tier.up_to)
            if line.repriced_from_tier is not None:
                was = tiers[line.repriced_from_tier - 1]
                monthly = f"{monthly}, repriced from {monthly_tokens_label(was.first_token, was.up_to)}"
            labels[line.line_number] = LineLabels(
                prompt_length_label(*prompt_bounds(version, line.context_tier)), monthly
            )
        except (KeyError, IndexError, ValueError, UnpricedModelError):
            repriced = (
                "" if line.repriced_from_tier is None else f", repriced from tier {line.repriced_from_tier}"
            )
            labels[line.line_number] = LineLabels(line.context_tier, f"tier {line.price_tier}{repriced}")
    return labels

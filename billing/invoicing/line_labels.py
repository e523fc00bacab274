"""An invoice line's context tier and price tier in the price table's words.

Invoice lines name their context tier and price tier by the schedule's ids (``upto_256k``, tier 2);
the dashboard's price table, its invoice pages and the invoice PDF write them as people read them
("up to 262,144 tokens", "first 1B"), all through these functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from billing.money_text import compact, integer
from billing.pricing.price_sheet import prompt_bounds, tier_rows
from billing.pricing.schedule_version import ScheduleVersion, TokenClass, UnpricedModelError


def prompt_length_label(above: int, up_to: int | None) -> str:
    """Prompts of ``(above, up_to]`` tokens: ``up to 262,144 tokens``, ``over 262,144 tokens``."""
    if up_to is None:
        return f"over {integer(above)} tokens"
    if above == 0:
        return f"up to {integer(up_to)} tokens"
    return f"{integer(above + 1)}–{integer(up_to)} tokens"


def monthly_tokens_label(first_token: int, up_to: int | None) -> str:
    """The month's tokens ``first_token .. up_to`` (1-based, inclusive): ``first 1B``, ``over 1B``."""
    if up_to is None:
        return "any" if first_token == 1 else f"over {compact(first_token - 1)}"
    if first_token == 1:
        return f"first {compact(up_to)}"
    return f"{compact(first_token)}–{compact(up_to)}"


def token_class_label(token_class: str) -> str:
    """``cache_hit_input`` -> ``Cache hit input``, as invoice lines write a line's token class."""
    return token_class.replace("_", " ").capitalize()


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


def adjustment_note(origin_period: str, closed_months: set[str]) -> str:
    """Why an adjustment line is on this invoice: late usage of a closed month, or usage of a
    month that was never closed on its own (billed with a later one)."""
    if origin_period in closed_months:
        return f"late usage from {origin_period}"
    return f"usage from {origin_period}, not closed on its own"

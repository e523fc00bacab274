"""The price sheet as a readable table: one row per model, prompt length and monthly volume band,
one column per token class (cache-hit input, cache-miss input, output).

Token classes may have different tier boundaries; rows then split at every boundary of any
class, so each cell is the exact price of that class for that band. Bands are labelled by
``billing.invoicing.line_labels``, which writes invoice lines' tiers in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby

from billing.invoicing.line_labels import monthly_tokens_label, prompt_length_label
from billing.pricing.price_sheet import PriceRow, PriceSheet
from billing.pricing.schedule_version import TokenClass


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

"""What a token costs to serve, per million, from measured figures; and the price schedule's margin.

A serving unit costs ``hourly_price / utilization`` per hour of serving, i.e. that over 3,600 per
second. Per million tokens of each class:

- cache-miss input = cost per second × 1M / ``prefill_tokens_per_s`` (the prompt is computed);
- cache-hit input, per tier = cost per second × 1M / ``cache_hit_tokens_per_s[tier]`` (its KV is
  read from device, host or disk memory), and overall the tiers weighted by ``cache_hit_shares``;
- output = cost per second × 1M / ``decode_tokens_per_s``.

Arithmetic is ``Decimal`` to 60 significant digits (``QUOTIENTS``); each figure is rounded once, to
``MAX_PRICE_PLACES`` places ROUND_HALF_UP like a price, in ``round_per_1m``. A margin is price −
cost from the unrounded cost, and its share of the price is rounded once to four places (0.1 %). Costs ignore context length (the
figures were measured at the stated prompt lengths) and the memory rent of holding cached KV.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from billing.money import MAX_PRICE_PLACES, TOKENS_PER_PRICE_UNIT
from billing.pricing.price_sheet import prompt_bounds, tier_rows
from billing.pricing.schedule_version import ScheduleVersion, TokenClass
from billing.pricing.serving_inputs import CacheTier, ServingInputs

SECONDS_PER_HOUR = 3600
SHARE_PLACES = 4  # a margin's share of the price: 0.8413 = 84.1 %


# A cost is a quotient of the inputs (1/9 has no finite decimal), so it is carried at 60 significant
# digits. That never changes a rounding to 6 places: only a quotient without a finite decimal is cut
# short, such a value is never exactly a tie, and for inputs of a dozen digits or fewer it lies more
# than 1e-35 from one, far beyond the 60th digit.
QUOTIENTS = decimal.Context(
    prec=60, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation, decimal.DivisionByZero]
)


def round_per_1m(value: Decimal) -> Decimal:
    """THE rounding step of a serving cost or margin: to ``MAX_PRICE_PLACES`` places, ROUND_HALF_UP."""
    return value.quantize(Decimal(1).scaleb(-MAX_PRICE_PLACES), rounding=ROUND_HALF_UP)


def _round_share(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-SHARE_PLACES), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class ServingCost:
    """Per 1M tokens, in the inputs' currency: each ``*_exact`` figure (60 digits) and its rounded value."""

    inputs: ServingInputs
    cost_per_second_exact: Decimal
    cache_miss_input_exact: Decimal
    output_exact: Decimal
    cache_hit_by_tier_exact: dict[CacheTier, Decimal]
    cache_hit_input_exact: Decimal  # the tiers weighted by the inputs' shares

    def exact(self, token_class: TokenClass) -> Decimal:
        return {
            TokenClass.CACHE_HIT_INPUT: self.cache_hit_input_exact,
            TokenClass.CACHE_MISS_INPUT: self.cache_miss_input_exact,
            TokenClass.OUTPUT: self.output_exact,
        }[token_class]

    def per_1m(self, token_class: TokenClass) -> Decimal:
        return round_per_1m(self.exact(token_class))

    def hit_per_1m(self, tier: CacheTier) -> Decimal:
        return round_per_1m(self.cache_hit_by_tier_exact[tier])

    @property
    def cost_per_hour_served(self) -> Decimal:
        """``hourly_price / utilization``, rounded like a cost."""
        return round_per_1m(QUOTIENTS.multiply(self.cost_per_second_exact, SECONDS_PER_HOUR))


def serving_cost(inputs: ServingInputs) -> ServingCost:
    """The cost of each token class per 1M tokens, exactly, from ``inputs``."""
    per_second = QUOTIENTS.divide(QUOTIENTS.divide(inputs.hourly_price, inputs.utilization), SECONDS_PER_HOUR)

    def per_1m(tokens_per_s: Decimal) -> Decimal:
        return QUOTIENTS.divide(QUOTIENTS.multiply(per_second, TOKENS_PER_PRICE_UNIT), tokens_per_s)

    by_tier = {tier: per_1m(inputs.cache_hit_tokens_per_s[tier]) for tier in CacheTier}
    cache_hit = Decimal(0)
    for tier in CacheTier:
        cache_hit = QUOTIENTS.add(cache_hit, QUOTIENTS.multiply(inputs.cache_hit_shares[tier], by_tier[tier]))
    return ServingCost(
        inputs=inputs,
        cost_per_second_exact=per_second,
        cache_miss_input_exact=per_1m(inputs.prefill_tokens_per_s),
        output_exact=per_1m(inputs.decode_tokens_per_s),
        cache_hit_by_tier_exact=by_tier,
        cache_hit_input_exact=cache_hit,
    )


@dataclass(frozen=True)
class Margin:
    """One price of the schedule against the cost of its token class (per 1M tokens)."""

    context_tier: str
    prompt_tokens_above: int  # the context tier holds prompts of (above, up_to] tokens
    prompt_tokens_up_to: int | None
    token_class: TokenClass
    first_token: int  # the monthly-volume band this price applies to (1-based, inclusive)
    up_to: int | None
    price: Decimal
    cost: Decimal  # rounded once (round_per_1m)
    margin: Decimal  # price − exact cost, rounded once; negative: sold below cost
    margin_share: Decimal | None  # margin ÷ price, four places; None for a free price


def margins(cost: ServingCost, version: ScheduleVersion, model: str) -> list[Margin]:
    """Every price ``version`` charges for ``model`` (each context tier, token class and volume band,
    in the price sheet's order) against ``cost``. Raises UnpricedModelError when none does."""
    rows = []
    for context_tier in version.context_tiers:
        above, up_to = prompt_bounds(version, context_tier.name)
        for token_class in TokenClass:
            exact_cost = cost.exact(token_class)
            for band in tier_rows(version, model, context_tier.name, token_class):
                difference = QUOTIENTS.subtract(band.unit_price, exact_cost)
                rows.append(
                    Margin(
                        context_tier=context_tier.name,
                        prompt_tokens_above=above,
                        prompt_tokens_up_to=up_to,
                        token_class=token_class,
                        first_token=band.first_token,
                        up_to=band.up_to,
                        price=band.unit_price,
                        cost=round_per_1m(exact_cost),
                        margin=round_per_1m(difference),
                        margin_share=(
                            _round_share(QUOTIENTS.divide(difference, band.unit_price))
                            if band.unit_price
                            else None
                        ),
                    )
                )
    return rows

"""The serving-cost report an operator reads: the inputs stated (and which were overridden), the
cost per 1M tokens of each class, and the margin of the schedule in force for the served model.

``hybatch billing serving-cost`` prints ``report_lines``; the dashboard's admin page renders the
same ``ServingCostReport``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from billing.money_text import percent, unit_price
from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import TokenClass
from billing.pricing.serving_cost import Margin, ServingCost, margins, serving_cost
from billing.pricing.serving_inputs import CacheTier, ServingInputsInvalidError, serving_inputs

TIERED_INPUTS = ("cache_hit_tokens_per_s", "cache_hit_shares")
_TIER_FIGURES = {"cache_hit_tokens_per_s": "tokens/s", "cache_hit_shares": "shares"}
_DESCRIPTIONS = {"hardware", "measured", "currency"}  # inputs that are not measured figures
CLASS_NAMES = {
    TokenClass.CACHE_HIT_INPUT: "cache-hit input",
    TokenClass.CACHE_MISS_INPUT: "cache-miss input",
    TokenClass.OUTPUT: "output",
}


@dataclass(frozen=True)
class ServingCostReport:
    cost: ServingCost
    overridden: tuple[str, ...]  # inputs given on the command line or the form, not by the file
    price_version: str  # schedule@version in force
    model: str  # the model priced (the one this service runs, unless asked for another)
    priced_by: str  # the schedule's entry pricing it ("*": any other model)
    margins: tuple[Margin, ...]


def merged_document(document: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with ``overrides`` on top; a per-tier override replaces only its tiers."""
    merged = dict(document)
    for key, value in overrides.items():
        if key in TIERED_INPUTS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def parse_tier_figures(text: str, option: str) -> dict[str, str]:
    """``device=1200,host=900`` -> ``{"device": "1200", "host": "900"}``; the figures are checked later."""
    figures = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        tier, sep, value = part.partition("=")
        if not sep or tier.strip() not in {t.value for t in CacheTier}:
            raise ServingInputsInvalidError([f"{option}: {part!r} is not TIER=NUMBER (device, host, disk)"])
        figures[tier.strip()] = value.strip()
    return figures


def serving_cost_report(
    session: Session,
    document: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    account_id: str | None,
    model: str,
    at: datetime,
) -> ServingCostReport:
    """Cost and margins at ``at`` for ``model``, priced by ``account_id``'s schedule or, with None,
    the default schedule (what an account with no assignment pays). Raises
    ServingInputsInvalidError (every problem), UnpricedModelError, NoScheduleInEffectError."""
    inputs = serving_inputs(merged_document(document, overrides))
    # An id no account has gets no assignments, so the book prices it by the default schedule.
    version = price_book(session, account_id if account_id is not None else "").at(at)
    cost = serving_cost(inputs)
    return ServingCostReport(
        cost=cost,
        overridden=tuple(overrides),
        price_version=version.price_version,
        model=model,
        priced_by=version.prices_for(model).match,
        margins=tuple(margins(cost, version, model)),
    )


def report_lines(report: ServingCostReport) -> list[str]:
    """The report as text for a terminal: the inputs, the costs, then one line per price."""
    # Imported here: line labels live with invoices; only the text report needs them.
    from billing.invoicing.line_labels import monthly_tokens_label, prompt_length_label

    inputs, cost = report.cost.inputs, report.cost
    currency = inputs.currency

    def mark(key: str) -> str:
        return "  (given)" if key in report.overridden else ""

    shares = ", ".join(
        f"{tier} {inputs.cache_hit_tokens_per_s[tier]:,} tokens/s × {inputs.cache_hit_shares[tier]}"
        for tier in CacheTier
    )
    tiers_given = [name for key, name in _TIER_FIGURES.items() if key in report.overridden]
    tiers_mark = f"  (given: {' and '.join(tiers_given)})" if tiers_given else ""
    # The file's hardware and measurement describe only the figures it gave.
    figures_given = set(report.overridden) - _DESCRIPTIONS
    whose = "  (the file's; the figures marked given are not from it)" if figures_given else ""
    lines = [
        f"inputs ({'given: ' + ', '.join(report.overridden) if report.overridden else 'all from the file'}):",
        f"  hardware       {inputs.hardware}{mark('hardware') or whose}",
        f"  measured       {inputs.measured}{mark('measured') or whose}",
        f"  hourly price   {inputs.hourly_price} {currency}{mark('hourly_price')}, utilization "
        f"{inputs.utilization}{mark('utilization')}: {cost.cost_per_hour_served} {currency} per hour served",
        f"  prefill        {inputs.prefill_tokens_per_s:,} tokens/s{mark('prefill_tokens_per_s')}",
        f"  decode         {inputs.decode_tokens_per_s:,} tokens/s{mark('decode_tokens_per_s')}",
        f"  cache hits     {shares}{tiers_mark}",
        f"cost per 1M tokens ({currency}):",
        f"  cache-miss input  {cost.per_1m(TokenClass.CACHE_MISS_INPUT)}",
        f"  cache-hit input   {cost.per_1m(TokenClass.CACHE_HIT_INPUT)}  (by tier: "
        + ", ".join(f"{tier} {cost.hit_per_1m(tier)}" for tier in CacheTier)
        + ")",
        f"  output            {cost.per_1m(TokenClass.OUTPUT)}",
        f"margins of {report.price_version} for {report.model} (its entry {report.priced_by!r}), per 1M tokens:",
    ]

    def money(value) -> str:
        return unit_price(value, currency, False)

    for row in report.margins:
        prompt = prompt_length_label(row.prompt_tokens_above, row.prompt_tokens_up_to)
        band = monthly_tokens_label(row.first_token, row.up_to)
        share = percent(row.margin_share) if row.margin_share is not None else "—"
        lines.append(
            f"  {prompt:<22} {CLASS_NAMES[row.token_class]:<17} {band:<10} price {money(row.price):<10} "
            f"cost {money(row.cost):<10} margin {money(row.margin):<10} {share}"
        )
    return lines

"""Per-request cost: the ``x_billing`` of one output line, and a batch's cost so far.

The cost of a request is *marginal*: its tokens are priced where the account's month-to-date
volume of each charge stands when the request lands (graduated: the next units of the month;
volume: the tier of month-to-date + this request). The month's invoice re-rates the whole ledger
and is authoritative; docs/billing.md explains when the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.money import ZERO, add, amount_for_tokens, decimal_string
from billing.periods import Period
from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import ContextTier, ScheduleVersion, TokenClass
from hybatch.models import UsageRecord, utc_now
from hybatch.result_lines import LinePrice, TokenUsage

X_BILLING = "x_billing"  # the key of the cost object on an output line

_TOKEN_COLUMNS = {
    TokenClass.CACHE_HIT_INPUT: UsageRecord.cache_hit_input_tokens,
    TokenClass.CACHE_MISS_INPUT: UsageRecord.cache_miss_input_tokens,
    TokenClass.OUTPUT: UsageRecord.output_tokens,
}


@dataclass(frozen=True)
class RequestCost:
    token_classes: dict[TokenClass, int]
    amount: Decimal  # unrounded, major units
    currency: str
    price_version: str

    def line_price(self) -> LinePrice:
        """What the usage record keeps of it (the ledger's amount, currency and version)."""
        return LinePrice(self.amount, self.currency, self.price_version)

    def as_x_billing(self) -> dict[str, Any]:
        """The line's ``x_billing`` object: token classes, amount as a decimal string, currency, version."""
        return {
            "token_classes": {token_class.value: n for token_class, n in self.token_classes.items()},
            "amount": decimal_string(self.amount),
            "currency": self.currency,
            "price_version": self.price_version,
        }


@dataclass(frozen=True)
class BatchCost:
    amount: Decimal  # sum of the recorded lines' x_billing amounts, unrounded
    currency: str | None  # None until a priced line exists
    priced_requests: int
    unpriced_requests: int  # successful lines recorded without x_billing


def _tokens_of(usage: TokenUsage) -> dict[TokenClass, int]:
    return {
        TokenClass.CACHE_HIT_INPUT: usage.cache_hit_input_tokens,
        TokenClass.CACHE_MISS_INPUT: usage.cache_miss_input_tokens,
        TokenClass.OUTPUT: usage.output_tokens,
    }


def _context_bounds(version: ScheduleVersion, tier: ContextTier) -> tuple[int, int | None]:
    """``(lower, upper]`` prompt lengths of ``tier`` (upper None: unbounded)."""
    index = version.context_tiers.index(tier)
    lower = version.context_tiers[index - 1].up_to_prompt_tokens if index > 0 else 0
    return lower or 0, tier.up_to_prompt_tokens


def month_to_date_volume(
    session: Session, account_id: str, model: str, lower: int, upper: int | None, at: datetime
) -> dict[TokenClass, int]:
    """The account's tokens per class for ``model`` this month before ``at``, prompts in (lower, upper]."""
    conditions = [
        UsageRecord.account_id == account_id,
        UsageRecord.model == model,
        UsageRecord.created_at >= Period.containing(at).start,
        UsageRecord.created_at < at,
        UsageRecord.prompt_tokens > lower,
    ]
    if upper is not None:
        conditions.append(UsageRecord.prompt_tokens <= upper)
    sums = session.execute(
        sa.select(*(sa.func.coalesce(sa.func.sum(column), 0) for column in _TOKEN_COLUMNS.values())).where(
            *conditions
        )
    ).one()
    return {token_class: int(total) for token_class, total in zip(_TOKEN_COLUMNS, sums, strict=True)}


def price_request(
    session: Session, *, account_id: str, model: str, usage: TokenUsage, at: datetime | None = None
) -> RequestCost:
    """Marginal cost of one finished request landing at ``at`` (default now); reads only.

    Call it before recording the request (its own usage must not count as month-to-date).
    Raises ``UnpricedModelError`` / ``NoScheduleInEffectError`` when nothing prices it.
    """
    at = at or utc_now()
    version = price_book(session, account_id).at(at)
    context_tier = version.context_tier_for(usage.prompt_tokens)
    lower, upper = _context_bounds(version, context_tier)
    month_to_date = month_to_date_volume(session, account_id, model, lower, upper, at)
    return price_at_volume(version, model, usage, month_to_date)


def price_at_volume(
    version: ScheduleVersion, model: str, usage: TokenUsage, month_to_date: dict[TokenClass, int]
) -> RequestCost:
    """Marginal cost of ``usage`` when the month already holds ``month_to_date`` tokens per class
    of this model and of the request's context tier (what ``price_request`` reads from the ledger).
    """
    tokens = _tokens_of(usage)
    context_tier = version.context_tier_for(usage.prompt_tokens)
    amounts = []
    for token_class, count in tokens.items():
        table = version.table(model, context_tier.name, token_class)
        volume_before = month_to_date[token_class]
        for tier_slice in table.slices(volume_before, count, volume_before + count):
            amounts.append(amount_for_tokens(tier_slice.tokens, tier_slice.unit_price))
    return RequestCost(tokens, add(*amounts), version.currency, version.price_version)


def batch_cost_so_far(session: Session, batch_id: str) -> BatchCost:
    """Sum of the ``x_billing`` amounts on the batch's recorded output lines (reads only)."""
    return batch_costs_so_far(session, [batch_id])[batch_id]


def batch_costs_so_far(session: Session, batch_ids: list[str]) -> dict[str, BatchCost]:
    """``batch_cost_so_far`` of each of ``batch_ids``, in one query over the ledger (reads only)."""
    amounts: dict[str, list[Decimal]] = {batch_id: [] for batch_id in batch_ids}
    currencies: dict[str, str | None] = dict.fromkeys(batch_ids)
    unpriced = dict.fromkeys(batch_ids, 0)
    if batch_ids:
        rows = session.execute(
            sa.select(UsageRecord.batch_id, UsageRecord.amount, UsageRecord.currency).where(
                UsageRecord.batch_id.in_(batch_ids)
            )
        )
        for batch_id, amount, line_currency in rows:
            if amount is None:
                unpriced[batch_id] += 1
                continue
            amounts[batch_id].append(amount)
            currencies[batch_id] = currencies[batch_id] or line_currency
    return {
        batch_id: BatchCost(
            add(ZERO, *amounts[batch_id]), currencies[batch_id], len(amounts[batch_id]), unpriced[batch_id]
        )
        for batch_id in batch_ids
    }

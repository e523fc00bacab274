"""Budget caps: a batch's optional ``max_cost`` and the rule that skips requests past it.

``max_cost`` is a batch ``metadata`` entry (OpenAI metadata values are strings), a decimal
amount in the account's currency, major units: ``{"max_cost": "12.50"}``. The worker admits a
request only while ``cost_so_far + in_flight_max + this_request_max <= max_cost``; requests it
does not admit end as ``skipped_budget`` error lines, without usage (unbilled).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from billing.money import add, amount_for_tokens
from billing.pricing.schedule_version import ScheduleVersion, TokenClass

MAX_COST_KEY = "max_cost"
SKIPPED_BUDGET = "skipped_budget"  # the error code of a request skipped by the cap


def parse_max_cost(metadata: Mapping[str, str] | None) -> Decimal | None:
    """The batch's cap from its metadata, or None when it has none.

    Raises ValueError (with a message for the batch's errors) when the value is not a
    non-negative decimal amount.
    """
    if not metadata or MAX_COST_KEY not in metadata:
        return None
    text = metadata[MAX_COST_KEY]
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise ValueError(f"metadata.max_cost must be a non-negative decimal amount, got {text!r}")
    return value


def should_skip(cost_so_far: Decimal, in_flight_max: Decimal, max_cost: Decimal | None) -> bool:
    """True when admitting more work could pass the cap.

    ``cost_so_far``: the batch's recorded cost (``batch_cost_so_far``); ``in_flight_max``: the
    worst-case cost of the requests running plus the one about to start (``worst_case_cost``).
    Without a cap nothing is skipped. Exactly reaching the cap is allowed.
    """
    if max_cost is None:
        return False
    return add(cost_so_far, in_flight_max) > max_cost


def worst_case_cost(version: ScheduleVersion, model: str, prompt_tokens: int, max_tokens: int) -> Decimal:
    """The most one request can cost: every prompt token a cache miss, ``max_tokens`` output,
    each at the dearest tier of its table (a safe bound whatever the month's volume)."""
    context = version.context_tier_for(prompt_tokens).name
    miss = version.table(model, context, TokenClass.CACHE_MISS_INPUT).highest_price
    output = version.table(model, context, TokenClass.OUTPUT).highest_price
    return add(amount_for_tokens(prompt_tokens, miss), amount_for_tokens(max_tokens, output))

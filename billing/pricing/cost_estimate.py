"""Price preview for an uploaded batch file, before it runs (``estimate_file`` reads and validates it).

Cache hits are predicted from the file's own prompt tree, as the worker will run it: prompts in
depth-first order of a trie over 16-token blocks (all requests of a file share the account's
cache salt); a request hits the leading full blocks that an earlier request already computed,
at most up to the block before its last token (the engine always computes the last token).
The cache is assumed cold: hits left by earlier batches can only make the real cost lower.

Output: min = 1 token per request, expected = half of ``max_tokens`` (rounded up), max =
``max_tokens``. Tokens are priced at the margin of the account's month-to-date volume.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from billing.money import add, amount_for_tokens, decimal_string
from billing.pricing.request_cost import month_to_date_volume
from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import ScheduleVersion, TokenClass
from hybatch import files
from hybatch.batch_input import BatchRequest, validate_batch_input
from hybatch.batch_results import EMBEDDINGS_MODEL_SUFFIX
from hybatch.errors import InvalidRequestError
from hybatch.models import BatchEndpoint, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.settings import Settings
from hybatch.storage import FileStorage

BLOCK_TOKENS = 16
ESTIMATES = ("min", "expected", "max")


@dataclass(frozen=True)
class PreviewRequest:
    prompt_token_ids: Sequence[int]
    max_tokens: int

    @classmethod
    def from_batch_request(cls, request: BatchRequest) -> PreviewRequest:
        return cls(request.generation.prompt_token_ids, request.generation.max_tokens)


@dataclass(frozen=True)
class CostEstimate:
    requests: int
    cache_hit_input_tokens: int
    cache_miss_input_tokens: int
    output_tokens: dict[str, int]  # by estimate: min, expected, max
    cost: dict[str, Decimal]  # by estimate, unrounded
    currency: str
    price_version: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "billing.cost_estimate",
            "requests": self.requests,
            "token_classes": {
                "cache_hit_input": self.cache_hit_input_tokens,
                "cache_miss_input": self.cache_miss_input_tokens,
                "output": dict(self.output_tokens),
            },
            "cost": {name: decimal_string(amount) for name, amount in self.cost.items()},
            "currency": self.currency,
            "price_version": self.price_version,
        }


@dataclass(eq=False)
class _Node:
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    ending: list[int] = field(default_factory=list)
    is_computed: bool = False


def predict_cache_hits(prompts: Sequence[Sequence[int]], block_tokens: int = BLOCK_TOKENS) -> list[int]:
    """Predicted cache-hit tokens of each prompt (same order as given), from the prompts alone."""
    root = _Node()
    paths: list[list[_Node]] = []
    for index, prompt in enumerate(prompts):
        node, path = root, []
        for start in range(0, len(prompt) // block_tokens * block_tokens, block_tokens):
            node = node.children.setdefault(tuple(prompt[start : start + block_tokens]), _Node())
            path.append(node)
        node.ending.append(index)
        paths.append(path)
    hits = [0] * len(prompts)
    stack = [root]
    while stack:  # depth first, a node's own prompts before its children's (as the worker runs them)
        node = stack.pop()
        for index in node.ending:
            cacheable_blocks = max(len(prompts[index]) - 1, 0) // block_tokens
            hit_blocks = 0
            for block in paths[index][:cacheable_blocks]:
                if not block.is_computed:
                    break
                hit_blocks += 1
            hits[index] = hit_blocks * block_tokens
            for block in paths[index]:
                block.is_computed = True
        stack.extend(reversed(list(node.children.values())))
    return hits


def estimate(
    requests: Sequence[PreviewRequest],
    version: ScheduleVersion,
    model: str,
    month_to_date: Mapping[tuple[str, TokenClass], int] | None = None,
    *,
    uses_prefix_cache: bool = True,
) -> CostEstimate:
    """Min / expected / max cost of running ``requests`` under ``version``.

    ``month_to_date`` is the account's volume so far by (context tier, token class); tokens of
    the batch are priced after it (graduated) or at the tier of the new total (volume). Without
    ``uses_prefix_cache`` (embeddings) every prompt token is a cache miss.
    """
    month_to_date = month_to_date or {}
    if uses_prefix_cache:
        hits = predict_cache_hits([r.prompt_token_ids for r in requests])
    else:
        hits = [0] * len(requests)
    outputs = {
        "min": [min(1, r.max_tokens) for r in requests],
        "expected": [(r.max_tokens + 1) // 2 for r in requests],
        "max": [r.max_tokens for r in requests],
    }
    costs: dict[str, Decimal] = {}
    for name in ESTIMATES:
        tokens: dict[tuple[str, TokenClass], int] = defaultdict(int)
        for request, hit, output in zip(requests, hits, outputs[name], strict=True):
            context = version.context_tier_for(len(request.prompt_token_ids)).name
            tokens[(context, TokenClass.CACHE_HIT_INPUT)] += hit
            tokens[(context, TokenClass.CACHE_MISS_INPUT)] += len(request.prompt_token_ids) - hit
            tokens[(context, TokenClass.OUTPUT)] += output
        amounts = []
        for (context, token_class), count in tokens.items():
            before = month_to_date.get((context, token_class), 0)
            table = version.table(model, context, token_class)
            for tier_slice in table.slices(before, count, before + count):
                amounts.append(amount_for_tokens(tier_slice.tokens, tier_slice.unit_price))
        costs[name] = add(*amounts)
    total_prompt = sum(len(r.prompt_token_ids) for r in requests)
    return CostEstimate(
        requests=len(requests),
        cache_hit_input_tokens=sum(hits),
        cache_miss_input_tokens=total_prompt - sum(hits),
        output_tokens={name: sum(values) for name, values in outputs.items()},
        cost=costs,
        currency=version.currency,
        price_version=version.price_version,
    )


def estimate_for_account(
    session: Session,
    account_id: str,
    model: str,
    requests: Sequence[PreviewRequest],
    at: datetime | None = None,
    *,
    uses_prefix_cache: bool = True,
) -> CostEstimate:
    """``estimate`` under the account's schedule at ``at`` (default now), after its month so far."""
    at = at or utc_now()
    version = price_book(session, account_id).at(at)
    month_to_date: dict[tuple[str, TokenClass], int] = {}
    lower = 0
    for context in version.context_tiers:
        volume = month_to_date_volume(session, account_id, model, lower, context.up_to_prompt_tokens, at)
        for token_class, count in volume.items():
            month_to_date[(context.name, token_class)] = count
        lower = context.up_to_prompt_tokens or 0
    return estimate(requests, version, model, month_to_date, uses_prefix_cache=uses_prefix_cache)


MAX_REPORTED_ERRORS = 5


def estimate_file(
    session: Session,
    storage: FileStorage,
    settings: Settings,
    *,
    account_id: str,
    input_file_id: str,
    endpoint: str,
) -> CostEstimate:
    """Estimate the cost of a batch over ``input_file_id``; raises InvalidRequestError (400) or
    NotFoundError (404, also for another account's file). Reads only."""
    try:
        batch_endpoint = BatchEndpoint(endpoint)
    except ValueError as error:
        supported = ", ".join(e.value for e in BatchEndpoint)
        raise InvalidRequestError(
            f"endpoint must be one of {supported}", code="invalid_value", param="endpoint"
        ) from error
    upload = files.get_file(session, account_id, input_file_id)
    batch_input = validate_batch_input(
        files.open_file_content(storage, upload),
        endpoint=batch_endpoint,
        served_model=settings.model_name,
        tokenizer=PromptTokenizer.from_checkpoint(settings.model),
        max_requests=settings.max_batch_lines,
    )
    if not batch_input.is_valid:
        shown = "; ".join(
            f"line {e.line}: {e.message}" if e.line else e.message
            for e in batch_input.errors[:MAX_REPORTED_ERRORS]
        )
        more = len(batch_input.errors) - MAX_REPORTED_ERRORS
        suffix = f" (and {more} more)" if more > 0 else ""
        raise InvalidRequestError(
            f"The input file would fail validation: {shown}{suffix}",
            code="invalid_batch_input",
            param="input_file_id",
        )
    requests = [PreviewRequest.from_batch_request(request) for request in batch_input.requests]
    if batch_endpoint is BatchEndpoint.EMBEDDINGS:
        # Priced as the worker bills them: input tokens only, all computed, under <model>:embeddings.
        model = settings.model_name + EMBEDDINGS_MODEL_SUFFIX
        return estimate_for_account(session, account_id, model, requests, uses_prefix_cache=False)
    return estimate_for_account(session, account_id, settings.model_name, requests)

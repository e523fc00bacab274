"""A realistic, reproducible ledger for demos, dashboard tests and the dashboard benchmark.

``write_sample_ledger`` adds an account with API keys and finished batches whose requests are
spread over ``[start, end)``: each request gets its output line (with the ``x_billing`` cost the
worker would have written, priced at the month-to-date volume like ``price_request``) and its usage
record at the same moment. Prompts share prefixes within a batch, so most input tokens are cache
hits, as in real batch traffic. Nothing here runs a model.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.pricing.request_cost import X_BILLING, price_at_volume
from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import TokenClass
from hybatch import accounts
from hybatch.models import (
    Batch,
    BatchEndpoint,
    BatchRequestResult,
    BatchStatus,
    File,
    FilePurpose,
    UsageRecord,
)
from hybatch.result_lines import TokenUsage, success_line

BLOCK_TOKENS = 16  # cache hits come in whole KV blocks


@dataclass(frozen=True)
class SampleLedger:
    account_id: str
    api_key_secrets: tuple[str, ...]  # shown once, like `hybatch keys create`
    batch_ids: tuple[str, ...]
    num_requests: int


def _usage(rng: random.Random, shared_prefix_tokens: int, is_first_of_batch: bool) -> TokenUsage:
    prompt = shared_prefix_tokens + rng.randint(20, 600)
    hit = 0 if is_first_of_batch or rng.randrange(100) < 8 else shared_prefix_tokens
    hit -= hit % BLOCK_TOKENS
    return TokenUsage(hit, prompt - hit, rng.randint(16, 400))


def write_sample_ledger(
    session: Session,
    *,
    account_name: str,
    num_requests: int,
    start: datetime,
    end: datetime,
    models: tuple[str, ...] = ("hybatch-tiny",),
    num_keys: int = 2,
    requests_per_batch: int = 200,
    seed: int = 0,
) -> SampleLedger:
    """Add the account ``account_name`` (or reuse it) and ``num_requests`` finished requests; flushes."""
    rng = random.Random(seed)
    account = accounts.find_account(session, account_name) or accounts.create_account(session, account_name)
    keys = [accounts.create_api_key(session, account.id) for _ in range(num_keys)]
    book = price_book(session, account.id)
    volumes: dict[tuple[Period, str, str], dict[TokenClass, int]] = defaultdict(
        lambda: dict.fromkeys(TokenClass, 0)
    )
    span = (end - start) / max(num_requests, 1)
    batch_ids: list[str] = []
    results: list[dict] = []
    records: list[dict] = []
    for first in range(0, num_requests, requests_per_batch):
        size = min(requests_per_batch, num_requests - first)
        key = keys[(first // requests_per_batch) % num_keys].key
        model = models[(first // requests_per_batch) % len(models)]
        began = start + span * first
        upload = File(account_id=account.id, filename="sample.jsonl", purpose=FilePurpose.BATCH, size_bytes=0)
        session.add(upload)
        session.flush()
        batch = Batch(
            account_id=account.id,
            api_key_id=key.id,
            endpoint=BatchEndpoint.CHAT_COMPLETIONS,
            model=model,
            input_file_id=upload.id,
            completion_window="24h",
            status=BatchStatus.COMPLETED,
            created_at=began,
            in_progress_at=began,
            finalizing_at=began + span * size,
            completed_at=began + span * size,
            expires_at=began + timedelta(hours=24),
            total_requests=size,
            completed_requests=size,
            metadata_={"description": f"sample batch {len(batch_ids) + 1}"},
        )
        session.add(batch)
        session.flush()
        batch_ids.append(batch.id)
        shared_prefix_tokens = rng.randint(8, 120) * BLOCK_TOKENS
        for index in range(size):
            created_at = began + span * index
            usage = _usage(rng, shared_prefix_tokens, index == 0)
            version = book.at(created_at)
            context_tier = version.context_tier_for(usage.prompt_tokens).name
            month_to_date = volumes[(Period.containing(created_at), model, context_tier)]
            cost = price_at_volume(version, model, usage, month_to_date)
            month_to_date[TokenClass.CACHE_HIT_INPUT] += usage.cache_hit_input_tokens
            month_to_date[TokenClass.CACHE_MISS_INPUT] += usage.cache_miss_input_tokens
            month_to_date[TokenClass.OUTPUT] += usage.output_tokens
            custom_id = f"request-{index}"
            line = success_line(
                custom_id,
                endpoint=BatchEndpoint.CHAT_COMPLETIONS,
                model=model,
                text="(sample)",
                finish_reason="stop",
                usage=usage,
                created_at=created_at,
            )
            line[X_BILLING] = cost.as_x_billing()
            results.append(
                {
                    "batch_id": batch.id,
                    "custom_id": custom_id,
                    "line_number": index + 1,
                    "is_error": False,
                    "line": line,
                    "created_at": created_at,
                }
            )
            records.append(
                {
                    "account_id": account.id,
                    "api_key_id": key.id,
                    "batch_id": batch.id,
                    "custom_id": custom_id,
                    "model": model,
                    "cache_hit_input_tokens": usage.cache_hit_input_tokens,
                    "cache_miss_input_tokens": usage.cache_miss_input_tokens,
                    "output_tokens": usage.output_tokens,
                    "prompt_tokens": usage.prompt_tokens,
                    "amount": cost.amount,
                    "currency": cost.currency,
                    "price_version": cost.price_version,
                    "created_at": created_at,
                }
            )
            batch.input_tokens += usage.prompt_tokens
            batch.cached_input_tokens += usage.cache_hit_input_tokens
            batch.output_tokens += usage.output_tokens
    if results:
        session.execute(sa.insert(BatchRequestResult), results)
        session.execute(sa.insert(UsageRecord), records)
    session.flush()
    return SampleLedger(account.id, tuple(key.secret for key in keys), tuple(batch_ids), num_requests)

"""What every end-to-end run must show: each request once, usage that adds up, a matching ledger."""

from __future__ import annotations

import sqlalchemy as sa

from hybatch.db import make_engine
from hybatch.models import UsageRecord


def assert_batch_accounted(database_url: str, batch, requests: list[dict], output_lines: list[dict]) -> None:
    """Every custom_id exactly once; prompt_tokens = cached + computed on every line, per the ledger."""
    assert batch.status == "completed", batch
    assert sorted(line["custom_id"] for line in output_lines) == sorted(r["custom_id"] for r in requests)
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(requests), len(requests), 0)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(UsageRecord).where(UsageRecord.batch_id == batch.id)).all()
    finally:
        engine.dispose()
    ledger = {row.custom_id: row for row in rows}
    assert len(ledger) == len(rows) == len(requests)
    for line in output_lines:
        usage = line["response"]["body"]["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        row = ledger[line["custom_id"]]
        assert cached == row.cache_hit_input_tokens
        assert usage["prompt_tokens"] == cached + row.cache_miss_input_tokens  # cached + computed
        assert usage["completion_tokens"] == row.output_tokens > 0
    assert batch.usage.input_tokens == sum(row.prompt_tokens for row in rows)
    assert batch.usage.input_tokens_details.cached_tokens == sum(row.cache_hit_input_tokens for row in rows)
    assert batch.usage.output_tokens == sum(row.output_tokens for row in rows)


def assert_ended_batch_accounted(
    database_url: str, batch, requests: list[dict], output_lines: list[dict], error_lines: list[dict]
) -> None:
    """A batch that ended any way: every custom_id exactly once across the output and error files,
    counts that match the files, and a usage record for exactly the output lines (none for an error)."""
    assert batch.status in ("completed", "failed", "expired", "cancelled"), batch
    recorded = [line["custom_id"] for line in output_lines + error_lines]
    assert sorted(recorded) == sorted(r["custom_id"] for r in requests), "a request lost or repeated"
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (
        len(requests),
        len(output_lines),
        len(error_lines),
    )
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(UsageRecord).where(UsageRecord.batch_id == batch.id)).all()
    finally:
        engine.dispose()
    assert sorted(row.custom_id for row in rows) == sorted(line["custom_id"] for line in output_lines)
    ledger = {row.custom_id: row for row in rows}
    for line in output_lines:
        usage = line["response"]["body"]["usage"]
        row = ledger[line["custom_id"]]
        assert usage["prompt_tokens_details"]["cached_tokens"] == row.cache_hit_input_tokens
        assert usage["prompt_tokens"] == row.cache_hit_input_tokens + row.cache_miss_input_tokens
        assert usage["completion_tokens"] == row.output_tokens > 0
    assert batch.usage.input_tokens == sum(row.prompt_tokens for row in rows)
    assert batch.usage.output_tokens == sum(row.output_tokens for row in rows)

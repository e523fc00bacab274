"""Batches in the states a developer meets, recorded the way the worker records them.

``add_batch_states`` gives an account a batch cancelled after 1 of 300 requests, one that failed
validation, one completed with one failed request, one that expired part-way and one cancelled
before it started. Requests are recorded with ``hybatch.batch_results`` (as ``worker.jobs`` does)
and result files written from those lines, so the counters, the error codes and the files agree
with what a real run leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.pricing.request_cost import X_BILLING, price_at_volume
from billing.pricing.schedule_store import price_book
from billing.pricing.schedule_version import TokenClass
from hybatch.batch_results import record_failure, record_success, write_result_files
from hybatch.models import (
    Batch,
    BatchEndpoint,
    BatchRequestResult,
    BatchStatus,
    File,
    FilePurpose,
    UsageRecord,
)
from hybatch.result_lines import TokenUsage, error_line, success_line
from hybatch.storage import FileStorage

# The engine's counters of the cancelled batch: it had started 67 requests (867 prompt tokens) when
# the cancel stopped it; 1 finished (13 prompt tokens, none from the cache) and is billed.
CANCELLED_CACHE_METRICS = {
    "lookups": 67,
    "lookup_tokens": 867,
    "hit_tokens": 0,
    "hit_tokens_device": 0,
    "hit_tokens_host": 0,
    "hit_tokens_disk": 0,
    "hit_tokens_shared": 0,
    "hits_cut_short": 0,
    "tokens_cut_short": 0,
    "windows_retained": 0,
    "windows_dropped": 0,
    "evictions": 0,
    "promotions": 0,
    "hit_rate": 0.0,
}


@dataclass(frozen=True)
class BatchStates:
    cancelled_id: str  # cancelled after 1 of 300 requests: 299 batch_cancelled error lines
    failed_id: str  # failed validation: no requests, no files, errors on the batch
    completed_id: str  # 4 of 5 completed, 1 failed (invalid_request): output and error files
    expired_id: str  # 20 of 50 completed, 30 batch_expired
    cancelled_early_id: str  # cancelled while validating, before any worker took it


def _batch(
    session: Session, account_id: str, api_key_id: str, model: str, began: datetime, **values
) -> Batch:
    upload = File(account_id=account_id, filename="requests.jsonl", purpose=FilePurpose.BATCH, size_bytes=0)
    session.add(upload)
    session.flush()
    batch = Batch(
        account_id=account_id,
        api_key_id=api_key_id,
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        model=model,
        input_file_id=upload.id,
        completion_window="24h",
        created_at=began,
        expires_at=began + timedelta(hours=24),
        **({"claimed_at": began} | values),
    )
    session.add(batch)
    session.flush()
    return batch


def _succeed(session: Session, batch: Batch, index: int, usage: TokenUsage, at: datetime) -> None:
    custom_id = f"request-{index}"
    line = success_line(
        custom_id,
        endpoint=batch.endpoint,
        model=batch.model,
        text="ok",
        finish_reason="stop",
        usage=usage,
        created_at=at,
    )
    version = price_book(session, batch.account_id).at(at)  # priced as the worker would, at no volume
    cost = price_at_volume(version, batch.model, usage, dict.fromkeys(TokenClass, 0))
    line[X_BILLING] = cost.as_x_billing()
    record_success(
        session,
        batch,
        custom_id=custom_id,
        line_number=index + 1,
        line=line,
        usage=usage,
        price=cost.line_price(),
    )


def _fail(session: Session, batch: Batch, index: int, code: str, message: str) -> None:
    custom_id = f"request-{index}"
    line = error_line(custom_id, code=code, message=message)
    record_failure(session, batch, custom_id=custom_id, line_number=index + 1, line=line)


def _finish(session: Session, storage: FileStorage, batch: Batch, at: datetime) -> None:
    """Dates the batch's records at ``at`` (not the wall clock) and writes its result files."""
    for table in (UsageRecord, BatchRequestResult):
        session.execute(sa.update(table).where(table.batch_id == batch.id).values(created_at=at))
    session.flush()
    session.refresh(batch)
    write_result_files(session, storage, batch)
    session.flush()


def add_batch_states(
    session: Session, storage: FileStorage, account_id: str, api_key_id: str, model: str, now: datetime
) -> BatchStates:
    """Adds the five batches to ``account_id``, all ended before ``now``; flushes, does not commit."""
    began = now - timedelta(hours=3)
    cancelled = _batch(
        session,
        account_id,
        api_key_id,
        model,
        began,
        status=BatchStatus.CANCELLED,
        in_progress_at=began,
        cancelling_at=began + timedelta(minutes=2),
        cancelled_at=began + timedelta(minutes=3),
        total_requests=300,
        metadata_={"description": "cancelled after one request"},
        cache_metrics=CANCELLED_CACHE_METRICS,
    )
    _succeed(session, cancelled, 0, TokenUsage(0, 13, 20), began + timedelta(minutes=1))
    for index in range(1, 300):
        _fail(
            session,
            cancelled,
            index,
            "batch_cancelled",
            "The batch was cancelled before this request finished.",
        )
    _finish(session, storage, cancelled, began + timedelta(minutes=1))

    failed = _batch(
        session,
        account_id,
        api_key_id,
        model,
        began + timedelta(minutes=10),
        status=BatchStatus.FAILED,
        failed_at=began + timedelta(minutes=11),
        errors=[
            {
                "code": "invalid_json",
                "line": 3,
                "message": "Line 3 is not valid JSON.",
                "param": None,
            }
        ],
    )

    completed_at = began + timedelta(minutes=30)
    completed = _batch(
        session,
        account_id,
        api_key_id,
        model,
        began + timedelta(minutes=20),
        status=BatchStatus.COMPLETED,
        in_progress_at=began + timedelta(minutes=20),
        finalizing_at=completed_at,
        completed_at=completed_at,
        total_requests=5,
    )
    for index in range(4):
        _succeed(session, completed, index, TokenUsage(48, 12, 30), completed_at)
    _fail(session, completed, 4, "invalid_request", "max_tokens must be at least 1")
    _finish(session, storage, completed, completed_at)

    expired_at = began + timedelta(minutes=50)
    expired = _batch(
        session,
        account_id,
        api_key_id,
        model,
        began + timedelta(minutes=40),
        status=BatchStatus.EXPIRED,
        in_progress_at=began + timedelta(minutes=40),
        expired_at=expired_at,
        total_requests=50,
    )
    for index in range(20):
        _succeed(session, expired, index, TokenUsage(32, 8, 10), expired_at)
    for index in range(20, 50):
        _fail(session, expired, index, "batch_expired", "The batch expired before this request finished.")
    _finish(session, storage, expired, expired_at)

    cancelled_early = _batch(
        session,
        account_id,
        api_key_id,
        model,
        began + timedelta(minutes=60),
        status=BatchStatus.CANCELLED,
        claimed_at=None,
        cancelling_at=began + timedelta(minutes=61),
        cancelled_at=began + timedelta(minutes=61),
    )
    return BatchStates(cancelled.id, failed.id, completed.id, expired.id, cancelled_early.id)

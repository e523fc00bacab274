"""Anthropic Message Batches on top of our batches: the same rows, engine, cache, ledger and bill.

A Message Batch is a batch whose endpoint is ``/v1/messages`` (its id ``msgbatch_...``). Its
requests are written as an input file of ordinary batch lines (``{custom_id, method, url, body}``,
the body being the request's ``params``) and from there it runs like any other batch; only the
line bodies (``hybatch.message_lines``) and the views below speak Anthropic.

The whole request is validated at creation, as Anthropic does, with the very checks the worker
runs again later (``hybatch.batch_input`` with ``hybatch.message_params``): a bad request refuses
the batch with every problem listed, so an accepted batch never fails validation.

Views (Anthropic's ``processing_status`` and ``request_counts``)::

    validating, in_progress, finalizing  -> in_progress   (every request counted as processing)
    cancelling                           -> canceling
    completed, failed, expired, cancelled -> ended        (succeeded | errored | canceled | expired)

A deleted Message Batch keeps its row (its usage records point at it) with ``deleted_at`` set;
these routes no longer see it, and its files are deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch import batches, files
from hybatch.accounts import Caller
from hybatch.batch_input import validate_batch_input
from hybatch.errors import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from hybatch.models import Batch, BatchEndpoint, BatchRequestResult, BatchStatus, File, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.storage import FileStorage

MAX_REQUESTS = 100_000  # Anthropic's limits per batch
MAX_BATCH_BYTES = 256 * 1024 * 1024
COMPLETION_WINDOW = "24h"  # a Message Batch expires 24 hours after it is created
CANCELLED_CODE, EXPIRED_CODE = "batch_cancelled", "batch_expired"  # error-line codes of those endings
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SHOWN_PROBLEMS = 10
_ENDED_AT = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


@dataclass(frozen=True)
class MessageRequest:
    """One entry of ``requests``: who asked and the Messages API params to run."""

    custom_id: str
    params: dict[str, Any]


@dataclass(frozen=True)
class RequestCounts:
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


def input_file_bytes(requests: Sequence[MessageRequest]) -> bytes:
    """The requests as a batch input file, one ``/v1/messages`` line each, in order."""
    lines = (
        json.dumps(
            {
                "custom_id": r.custom_id,
                "method": "POST",
                "url": BatchEndpoint.MESSAGES.value,
                "body": r.params,
            }
        )
        for r in requests
    )
    return "".join(line + "\n" for line in lines).encode()


def check_requests(
    requests: Sequence[MessageRequest], content: bytes, *, served_model: str, tokenizer: PromptTokenizer
) -> int:
    """Validates the whole batch (``content`` is ``input_file_bytes(requests)``); returns its prompt
    tokens. Raises InvalidRequestError naming the first problems (``requests[3].params.max_tokens``)."""
    if len(content) > MAX_BATCH_BYTES:
        raise PayloadTooLargeError(
            f"The batch's requests are {len(content):,} bytes as JSONL; at most {MAX_BATCH_BYTES:,} are allowed.",
            code="request_too_large",
        )
    problems = _envelope_problems(requests)
    if problems:
        raise _refusal(problems)
    validated = validate_batch_input(
        [content],
        endpoint=BatchEndpoint.MESSAGES,
        served_model=served_model,
        tokenizer=tokenizer,
        max_requests=MAX_REQUESTS,
    )
    if validated.errors:
        raise _refusal([_request_problem(e.line, e.param, e.message) for e in validated.errors])
    return sum(len(r.generation.prompt_token_ids) for r in validated.requests)


def _envelope_problems(requests: Sequence[MessageRequest]) -> list[str]:
    problems: list[str] = []
    if not requests:
        problems.append("requests: at least one request is required.")
    if len(requests) > MAX_REQUESTS:
        problems.append(f"requests: at most {MAX_REQUESTS:,} requests are allowed in a batch.")
    for index, request in enumerate(requests):
        if not _CUSTOM_ID.fullmatch(request.custom_id):
            problems.append(
                f"requests[{index}].custom_id: must be 1-64 characters of a-z, A-Z, 0-9, _ and -."
            )
    return problems


def _refusal(problems: list[str]) -> InvalidRequestError:
    more = len(problems) - _SHOWN_PROBLEMS
    shown = "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
    return InvalidRequestError(shown, code="invalid_request")


def _request_problem(line: int | None, param: str | None, message: str) -> str:
    # Line n of the input file is requests[n - 1]; its body is that request's params.
    where = "requests" if line is None else f"requests[{line - 1}]"
    if param == "custom_id":
        where += ".custom_id"
    elif param:
        where += ".params" + param.removeprefix("body")
    return f"{where}: {message}"


def create_message_batch(
    session: Session,
    storage: FileStorage,
    enqueue: batches.BatchEnqueuer,
    caller: Caller,
    content: bytes,
    *,
    num_requests: int,
    served_model: str,
    prompt_tokens: int | None,
    token_limit: int | None,
) -> Batch:
    """Store ``content`` (checked by ``check_requests``) as the input file, then create and enqueue
    the batch as ``hybatch.batches.create_batch`` does (quota included); commits. A refused batch
    leaves no input file behind."""
    upload = files.upload_file(
        session,
        storage,
        account_id=caller.account_id,
        filename="message_batch_requests.jsonl",
        purpose="batch",
        chunks=[content],
        max_file_bytes=len(content),
    )
    request = batches.NewBatchRequest(
        input_file_id=upload.id,
        endpoint=BatchEndpoint.MESSAGES.value,
        completion_window=COMPLETION_WINDOW,
        metadata=None,
        quota_prompt_tokens=prompt_tokens,
    )
    try:
        batch = batches.create_batch(
            session,
            enqueue,
            caller,
            request,
            served_model=served_model,
            completion_windows=(COMPLETION_WINDOW,),
            token_limit=token_limit,
        )
    except InvalidRequestError:  # refused (the quota): no batch reads the file, so it goes too
        files.delete_file(session, storage, caller.account_id, upload.id)
        raise
    # Known now, so the counts add up before a worker validates (it writes the same number then).
    session.execute(
        sa.update(Batch)
        .where(Batch.id == batch.id, Batch.total_requests == 0)
        .values(total_requests=num_requests)
    )
    session.commit()
    session.refresh(batch)
    return batch


def _visible(account_id: str) -> sa.Select[tuple[Batch]]:
    return sa.select(Batch).where(
        Batch.account_id == account_id, Batch.endpoint == BatchEndpoint.MESSAGES, Batch.deleted_at.is_(None)
    )


def get_message_batch(session: Session, account_id: str, batch_id: str) -> Batch:
    """The account's Message Batch ``batch_id``; NotFoundError for unknown, deleted or foreign ids."""
    batch = session.scalar(_visible(account_id).where(Batch.id == batch_id))
    if batch is None:
        raise NotFoundError(f"No Message Batch found with id {batch_id!r}.", param="id")
    return batch


@dataclass(frozen=True)
class MessageBatchPage:
    items: list[Batch]
    has_more: bool


def list_message_batches(
    session: Session, account_id: str, *, before_id: str | None, after_id: str | None, limit: int
) -> MessageBatchPage:
    """Newest first: ``after_id`` pages on to older batches, ``before_id`` back to newer ones."""
    if before_id is not None and after_id is not None:
        raise InvalidRequestError("Give before_id or after_id, not both.")
    query = _visible(account_id)
    key = sa.tuple_(Batch.created_at, Batch.id)
    anchor_id = before_id or after_id
    newer = before_id is not None
    if anchor_id is not None:
        anchor = get_message_batch(session, account_id, anchor_id)
        anchor_key = sa.tuple_(sa.literal(anchor.created_at, Batch.created_at.type), sa.literal(anchor.id))
        query = query.where(key > anchor_key if newer else key < anchor_key)
    # The page is the `limit` rows nearest the anchor, shown newest first either way.
    order = (Batch.created_at, Batch.id) if newer else (Batch.created_at.desc(), Batch.id.desc())
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    page = rows[:limit]
    return MessageBatchPage(items=page[::-1] if newer else page, has_more=len(rows) > limit)


def processing_status(batch: Batch) -> str:
    if batch.status.is_terminal:
        return "ended"
    return "canceling" if batch.status is BatchStatus.CANCELLING else "in_progress"


def ended_at(batch: Batch) -> datetime | None:
    return getattr(batch, _ENDED_AT[batch.status]) if batch.status in _ENDED_AT else None


def unrecorded_type(status: BatchStatus) -> str:
    """The result of a request an ended batch never recorded (cancelled before a worker took it)."""
    return {BatchStatus.CANCELLED: "canceled", BatchStatus.EXPIRED: "expired"}.get(status, "errored")


def request_counts(session: Session, batch: Batch) -> RequestCounts:
    """Anthropic's tallies: all ``processing`` until the batch ends, then each request's outcome."""
    if not batch.status.is_terminal:
        return RequestCounts(batch.total_requests, 0, 0, 0, 0)
    by_code: dict[str | None, int] = {}
    if batch.failed_requests:
        code = BatchRequestResult.line[("error", "code")].as_string()
        by_code = dict(
            session.execute(
                sa.select(code, sa.func.count())
                .where(BatchRequestResult.batch_id == batch.id, BatchRequestResult.is_error.is_(True))
                .group_by(code)
            ).all()
        )
    canceled, expired = by_code.get(CANCELLED_CODE, 0), by_code.get(EXPIRED_CODE, 0)
    counts = {"canceled": canceled, "expired": expired, "errored": batch.failed_requests - canceled - expired}
    unrecorded = max(batch.total_requests - batch.completed_requests - batch.failed_requests, 0)
    counts[unrecorded_type(batch.status)] += unrecorded
    return RequestCounts(processing=0, succeeded=batch.completed_requests, **counts)


def cancel_message_batch(session: Session, account_id: str, batch_id: str) -> Batch:
    """Ask the batch to stop (``hybatch.batches.cancel_batch``); an ended one is returned as it is."""
    batch = get_message_batch(session, account_id, batch_id)
    if batch.status.is_terminal:
        return batch
    return batches.cancel_batch(session, account_id, batch_id)


def delete_message_batch(session: Session, storage: FileStorage, account_id: str, batch_id: str) -> str:
    """Hide an ended batch and delete its input and result files; commits. ConflictError before it ends."""
    batch = get_message_batch(session, account_id, batch_id)
    if not batch.status.is_terminal:
        raise ConflictError(
            f"Message Batch {batch_id} is still {processing_status(batch).replace('_', ' ')}; "
            "cancel it and wait for it to end before deleting it.",
            param="id",
        )
    file_ids = [f for f in (batch.input_file_id, batch.output_file_id, batch.error_file_id) if f is not None]
    now = utc_now()
    batch.deleted_at = now
    session.execute(
        sa.update(File).where(File.id.in_(file_ids), File.deleted_at.is_(None)).values(deleted_at=now)
    )
    session.commit()
    for file_id in file_ids:
        storage.delete(file_id)
    return batch_id

"""Batches: create (then enqueue after commit), read, list and cancel, scoped to one account.

Status changes that can race with the worker are single conditional UPDATEs, so exactly one
side wins: see ``cancel_batch`` here and ``hybatch.leases.take_batch`` (which stamps ``claimed_at``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch import quotas, webhooks
from hybatch.accounts import Caller
from hybatch.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceUnavailableError
from hybatch.files import get_file
from hybatch.ids import new_batch_id, new_id
from hybatch.models import Account, Batch, BatchEndpoint, BatchStatus, FilePurpose, utc_now
from hybatch.pagination import Page, paginate
from hybatch.settings import completion_window_duration

# Called with a committed batch id; publishes the worker task. Raises when the broker is down.
BatchEnqueuer = Callable[[str], None]

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
CANCELLABLE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


@dataclass(frozen=True)
class NewBatchRequest:
    """What a client asked for in ``POST /v1/batches``."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: Mapping[str, str] | None
    output_expires_after_s: int | None = None  # checked by hybatch.files.check_expires_after
    # The input's prompt tokens when an enqueued-token quota applies (hybatch.quotas), else None.
    quota_prompt_tokens: int | None = None


def create_batch(
    session: Session,
    enqueue: BatchEnqueuer,
    caller: Caller,
    request: NewBatchRequest,
    *,
    served_model: str,
    completion_windows: tuple[str, ...],
    token_limit: int | None = None,
) -> Batch:
    """Validate, commit a ``validating`` batch, then enqueue it.

    With a ``token_limit`` (and ``request.quota_prompt_tokens`` counted), the batch is refused
    with ``token_limit_exceeded`` when the account's unfinished batches for the model and this one
    would hold more prompt tokens than that; the check and the insert are one transaction under a
    lock on the account's row, so two creations at once cannot both slip under the limit.
    If the enqueue fails the batch is committed as ``failed`` (code ``enqueue_failed``) and
    ServiceUnavailableError is raised, so no batch waits for a task that was never sent.
    """
    endpoint = _check_endpoint(request.endpoint)
    _check_window(request.completion_window, completion_windows)
    _check_metadata(request.metadata)
    input_file = get_file(session, caller.account_id, request.input_file_id)
    if input_file.purpose is not FilePurpose.BATCH:
        raise InvalidRequestError(
            f"File {input_file.id} has purpose '{input_file.purpose.value}'; a batch input needs 'batch'.",
            param="input_file_id",
            code="invalid_value",
        )
    if token_limit is not None and request.quota_prompt_tokens is not None:
        # The account's row lock (Postgres) or the write lock (SQLite) until the commit below.
        session.execute(sa.update(Account).where(Account.id == caller.account_id).values(name=Account.name))
        state = quotas.QuotaState(
            served_model, token_limit, quotas.enqueued_tokens(session, caller.account_id, served_model)
        )
        try:
            quotas.check_room(state, request.quota_prompt_tokens)
        except InvalidRequestError:
            session.rollback()
            raise
    created_at = utc_now()
    batch = Batch(
        # Anthropic's Message Batches have ids of their own shape (hybatch.message_batches).
        id=new_id("msgbatch_") if endpoint is BatchEndpoint.MESSAGES else new_batch_id(),
        account_id=caller.account_id,
        api_key_id=caller.api_key_id,
        endpoint=endpoint,
        model=served_model,
        input_file_id=input_file.id,
        completion_window=request.completion_window,
        created_at=created_at,
        expires_at=created_at + completion_window_duration(request.completion_window),
        published_at=created_at,  # its task is sent right after the commit (sweepers need to know)
        metadata_=dict(request.metadata) if request.metadata is not None else None,
        output_expires_after_s=request.output_expires_after_s,
        quota_prompt_tokens=request.quota_prompt_tokens,
    )
    session.add(batch)
    session.commit()
    try:
        enqueue(batch.id)
    except Exception as error:
        batch.status = BatchStatus.FAILED
        batch.failed_at = utc_now()
        batch.errors = [
            {
                "code": "enqueue_failed",
                "line": None,
                "message": "The batch could not be queued.",
                "param": None,
            }
        ]
        webhooks.record_batch_event(session, batch.id, BatchStatus.FAILED)
        session.commit()
        raise ServiceUnavailableError(
            f"Batch {batch.id} could not be queued; it was marked failed. Try again later.",
            code="enqueue_failed",
        ) from error
    return batch


def _check_endpoint(endpoint: str) -> BatchEndpoint:
    try:
        return BatchEndpoint(endpoint)
    except ValueError:
        supported = ", ".join(e.value for e in BatchEndpoint)
        raise InvalidRequestError(
            f"Unsupported endpoint {endpoint!r}; supported: {supported}.",
            param="endpoint",
            code="invalid_value",
        ) from None


def _check_window(window: str, completion_windows: tuple[str, ...]) -> None:
    if window not in completion_windows:
        raise InvalidRequestError(
            f"Unsupported completion_window {window!r}; supported: {', '.join(completion_windows)}.",
            param="completion_window",
            code="invalid_value",
        )


def _check_metadata(metadata: Mapping[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequestError(
                f"metadata keys are limited to {MAX_METADATA_KEY_CHARS} characters and values "
                f"to {MAX_METADATA_VALUE_CHARS}.",
                param=f"metadata.{key[:MAX_METADATA_KEY_CHARS]}",
                code="invalid_value",
            )


def _visible(account_id: str) -> sa.Select[tuple[Batch]]:
    # A Message Batch deleted through Anthropic's API keeps its row for the ledger, out of sight.
    return sa.select(Batch).where(Batch.account_id == account_id, Batch.deleted_at.is_(None))


def get_batch(session: Session, account_id: str, batch_id: str) -> Batch:
    """The account's batch ``batch_id``; raises NotFoundError for unknown, deleted or foreign ids."""
    batch = session.scalar(_visible(account_id).where(Batch.id == batch_id))
    if batch is None:
        raise NotFoundError(f"No such Batch object: {batch_id}", param="id")
    return batch


def find_batches(session: Session, account_id: str, batch_ids: list[str]) -> list[Batch]:
    """The account's batches among ``batch_ids`` (others' and unknown ids are left out), newest first."""
    if not batch_ids:
        return []
    query = _visible(account_id).where(Batch.id.in_(batch_ids))
    return list(session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc())))


def list_batches(session: Session, account_id: str, *, after: str | None, limit: int) -> Page[Batch]:
    """The account's batches, newest first."""
    query = _visible(account_id)
    return paginate(session, query, Batch, after=after, limit=limit)


def cancel_batch(session: Session, account_id: str, batch_id: str) -> Batch:
    """Ask for a batch to stop; commits. Cancelling twice is harmless.

    A ``validating`` batch no worker has claimed yet goes straight to ``cancelled``; otherwise
    it becomes ``cancelling`` and the worker finishes it (keeping the lines already done).
    """
    batch = get_batch(session, account_id, batch_id)
    now = utc_now()
    not_started = session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING, Batch.claimed_at.is_(None))
        .values(status=BatchStatus.CANCELLED, cancelling_at=now, cancelled_at=now)
    )
    if not_started.rowcount == 1:
        webhooks.record_batch_event(session, batch_id, BatchStatus.CANCELLED)
    else:
        running = session.execute(
            sa.update(Batch)
            .where(Batch.id == batch_id, Batch.status.in_(CANCELLABLE))
            .values(status=BatchStatus.CANCELLING, cancelling_at=now)
        )
        if running.rowcount == 0:
            session.rollback()
            session.refresh(batch)
            if batch.status not in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                raise ConflictError(
                    f"Batch {batch_id} is {batch.status.value} and can no longer be cancelled.",
                    param="id",
                    code="batch_not_cancellable",
                )
            return batch
    session.commit()
    session.refresh(batch)
    return batch

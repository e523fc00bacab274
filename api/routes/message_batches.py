"""``/v1/messages/batches``: Anthropic's Message Batches API over our batches.

create, retrieve, list (``before_id`` / ``after_id`` / ``limit``), cancel, results (JSONL) and
delete. Authenticated by ``x-api-key`` (what the ``anthropic`` SDK sends) or ``Authorization:
Bearer``; the ``anthropic-version`` header is accepted and not needed. Errors are Anthropic-shaped
(``api.anthropic_errors``). The translation lives in ``hybatch.message_batches``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.anthropic_errors import anthropic_error_responses
from api.deps import EnqueueDep, SessionsDep, SettingsDep, StorageDep
from api.message_batch_schemas import (
    MessageBatchCreate,
    MessageBatchDeleted,
    MessageBatchList,
    MessageBatchObject,
)
from billing.limits.spend_limits import check_batch_creation
from hybatch import message_batches, quotas
from hybatch.accounts import Caller, authenticate
from hybatch.errors import AuthenticationError, InvalidRequestError, ServiceUnavailableError
from hybatch.message_batches import MessageRequest
from hybatch.message_results import iter_results_jsonl, result_sources
from hybatch.models import Batch
from hybatch.prompt_tokenizer import CheckpointFilesError, PromptTokenizer

router = APIRouter(prefix="/v1/messages/batches", tags=["message batches"])

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 1000
RESULTS_MEDIA_TYPE = "application/x-jsonl"
JSONL_RESPONSE = {
    200: {
        "description": "One JSON result per line",
        "content": {RESULTS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def get_key_caller(request: Request, sessions: SessionsDep) -> Caller:
    secret = request.headers.get("x-api-key", "").strip()
    if not secret:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        secret = bearer.strip() if scheme.lower() == "bearer" else ""
    if not secret:
        raise AuthenticationError("x-api-key header is required.")
    with sessions() as session:
        caller = authenticate(session, secret)
    if caller is None:
        raise AuthenticationError("invalid x-api-key")
    return caller


KeyCaller = Annotated[Caller, Depends(get_key_caller)]


def _view(session: Session, request: Request, batch: Batch) -> MessageBatchObject:
    results_url = str(request.url_for("message_batch_results", message_batch_id=batch.id))
    return MessageBatchObject.from_row(batch, message_batches.request_counts(session, batch), results_url)


@router.post("", responses=anthropic_error_responses(400, 401, 413, 503))
def create_message_batch(
    body: MessageBatchCreate,
    request: Request,
    caller: KeyCaller,
    sessions: SessionsDep,
    settings: SettingsDep,
    storage: StorageDep,
    enqueue: EnqueueDep,
) -> MessageBatchObject:
    requests = [MessageRequest(r.custom_id, r.params) for r in body.requests]
    content = message_batches.input_file_bytes(requests)
    try:
        tokenizer = PromptTokenizer.from_checkpoint(settings.model)
    except CheckpointFilesError as error:
        raise ServiceUnavailableError(f"The served model's tokenizer is unavailable: {error}") from error
    # Checked with no session open: tokenizing a big batch takes a while.
    prompt_tokens = message_batches.check_requests(
        requests, content, served_model=settings.model_name, tokenizer=tokenizer
    )
    with sessions() as session:
        check_batch_creation(session, caller.account_id, caller.api_key_id)  # hard spend limits
        limit = quotas.token_limit(
            session, caller.account_id, settings.model_name, settings.enqueued_token_limit
        )
    with sessions() as session:
        batch = message_batches.create_message_batch(
            session,
            storage,
            enqueue,
            caller,
            content,
            num_requests=len(requests),
            served_model=settings.model_name,
            prompt_tokens=None if limit is None else prompt_tokens,
            token_limit=limit,
        )
        return _view(session, request, batch)


@router.get("", responses=anthropic_error_responses(400, 401, 404))
def list_message_batches(
    request: Request,
    caller: KeyCaller,
    sessions: SessionsDep,
    before_id: str | None = None,
    after_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
) -> MessageBatchList:
    with sessions() as session:
        page = message_batches.list_message_batches(
            session, caller.account_id, before_id=before_id, after_id=after_id, limit=limit
        )
        data = [_view(session, request, batch) for batch in page.items]
    return MessageBatchList(
        data=data,
        has_more=page.has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{message_batch_id}", responses=anthropic_error_responses(401, 404))
def retrieve_message_batch(
    request: Request, caller: KeyCaller, sessions: SessionsDep, message_batch_id: str
) -> MessageBatchObject:
    with sessions() as session:
        return _view(
            session, request, message_batches.get_message_batch(session, caller.account_id, message_batch_id)
        )


@router.post("/{message_batch_id}/cancel", responses=anthropic_error_responses(401, 404))
def cancel_message_batch(
    request: Request, caller: KeyCaller, sessions: SessionsDep, message_batch_id: str
) -> MessageBatchObject:
    with sessions() as session:
        batch = message_batches.cancel_message_batch(session, caller.account_id, message_batch_id)
        return _view(session, request, batch)


@router.get(
    "/{message_batch_id}/results",
    name="message_batch_results",
    response_class=StreamingResponse,
    responses={**JSONL_RESPONSE, **anthropic_error_responses(400, 401, 404)},
)
def message_batch_results(
    caller: KeyCaller, sessions: SessionsDep, storage: StorageDep, message_batch_id: str
) -> StreamingResponse:
    with sessions() as session:
        batch = message_batches.get_message_batch(session, caller.account_id, message_batch_id)
        if not batch.status.is_terminal:
            raise InvalidRequestError(
                f"Message Batch {message_batch_id} has not ended yet; its results are available once "
                "processing_status is 'ended'."
            )
        sources = result_sources(session, batch)
    # Streams with the session closed.
    return StreamingResponse(iter_results_jsonl(storage, sources), media_type=RESULTS_MEDIA_TYPE)


@router.delete("/{message_batch_id}", responses=anthropic_error_responses(401, 404, 409))
def delete_message_batch(
    caller: KeyCaller, sessions: SessionsDep, storage: StorageDep, message_batch_id: str
) -> MessageBatchDeleted:
    with sessions() as session:
        deleted_id = message_batches.delete_message_batch(
            session, storage, caller.account_id, message_batch_id
        )
    return MessageBatchDeleted(id=deleted_id)

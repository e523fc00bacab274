"""``/v1/batches``: create, retrieve, list (cursor ``after``, ``limit``), cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentCaller, EnqueueDep, SessionsDep, SettingsDep, StorageDep
from api.openapi import error_responses
from api.schemas import BatchCreate, BatchObject, ListPage
from billing.limits.spend_limits import check_batch_creation
from hybatch import batches, files, quotas
from hybatch.errors import InvalidRequestError
from hybatch.models import BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer

router = APIRouter(prefix="/v1/batches", tags=["batches"])

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


@router.post("", responses=error_responses(400, 401, 413, 503))
def create_batch(
    body: BatchCreate,
    caller: CurrentCaller,
    sessions: SessionsDep,
    settings: SettingsDep,
    storage: StorageDep,
    enqueue: EnqueueDep,
) -> BatchObject:
    if body.endpoint == BatchEndpoint.MESSAGES:
        raise InvalidRequestError(
            "Anthropic Message Batches are created with POST /v1/messages/batches.",
            param="endpoint",
            code="invalid_value",
        )
    with sessions() as session:
        check_batch_creation(session, caller.account_id, caller.api_key_id)  # hard spend limits
        limit = quotas.token_limit(
            session, caller.account_id, settings.model_name, settings.enqueued_token_limit
        )
        input_file = None if limit is None else files.get_file(session, caller.account_id, body.input_file_id)
    prompt_tokens = None
    if input_file is not None and body.endpoint in {e.value for e in BatchEndpoint}:
        # Counted with no session open (a big input takes a while), exactly as validation will.
        prompt_tokens = quotas.count_prompt_tokens(
            files.open_file_content(storage, input_file),
            endpoint=BatchEndpoint(body.endpoint),
            model=settings.model_name,
            tokenizer=PromptTokenizer.from_checkpoint(settings.model),
            max_requests=settings.max_batch_lines,
        )
    expiry = body.output_expires_after
    request = batches.NewBatchRequest(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after_s=None
        if expiry is None
        else files.check_expires_after(expiry.anchor, expiry.seconds, param="output_expires_after"),
        quota_prompt_tokens=prompt_tokens,
    )
    with sessions() as session:
        batch = batches.create_batch(
            session,
            enqueue,
            caller,
            request,
            served_model=settings.model_name,
            completion_windows=settings.completion_windows,
            token_limit=limit,
        )
        return BatchObject.from_row(batch)


@router.get("", responses=error_responses(400, 401))
def list_batches(
    caller: CurrentCaller,
    sessions: SessionsDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
) -> ListPage[BatchObject]:
    with sessions() as session:
        page = batches.list_batches(session, caller.account_id, after=after, limit=limit)
        return ListPage.of([BatchObject.from_row(row) for row in page.items], page.has_more)


@router.get("/{batch_id}", responses=error_responses(401, 404))
def retrieve_batch(caller: CurrentCaller, sessions: SessionsDep, batch_id: str) -> BatchObject:
    with sessions() as session:
        return BatchObject.from_row(batches.get_batch(session, caller.account_id, batch_id))


@router.post("/{batch_id}/cancel", responses=error_responses(401, 404, 409))
def cancel_batch(caller: CurrentCaller, sessions: SessionsDep, batch_id: str) -> BatchObject:
    with sessions() as session:
        return BatchObject.from_row(batches.cancel_batch(session, caller.account_id, batch_id))

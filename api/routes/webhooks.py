"""``/v1/webhook_endpoints``: the account's webhook endpoints, as the openai SDK's ``client.webhooks``
manages them (create shows the signing secret once; list, retrieve, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentCaller, SessionsDep, SettingsDep
from api.openapi import error_responses
from api.schemas import DeletedWebhookEndpoint, ListPage, WebhookEndpointCreate, WebhookEndpointObject
from hybatch import webhooks

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"])

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100


@router.post("", responses=error_responses(400, 401))
def create_webhook_endpoint(
    body: WebhookEndpointCreate, caller: CurrentCaller, sessions: SessionsDep, settings: SettingsDep
) -> WebhookEndpointObject:
    with sessions() as session:
        endpoint, secret = webhooks.create_endpoint(
            session,
            caller.account_id,
            url=body.url,
            event_types=body.event_types,
            name=body.name,
            allow_private=settings.webhook_allow_private,
        )
        return WebhookEndpointObject.from_row(endpoint, signing_secret=secret)


@router.get("", responses=error_responses(400, 401))
def list_webhook_endpoints(
    caller: CurrentCaller,
    sessions: SessionsDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
) -> ListPage[WebhookEndpointObject]:
    with sessions() as session:
        page = webhooks.list_endpoints(session, caller.account_id, after=after, limit=limit)
        return ListPage.of([WebhookEndpointObject.from_row(row) for row in page.items], page.has_more)


@router.get("/{endpoint_id}", responses=error_responses(401, 404))
def retrieve_webhook_endpoint(
    caller: CurrentCaller, sessions: SessionsDep, endpoint_id: str
) -> WebhookEndpointObject:
    with sessions() as session:
        return WebhookEndpointObject.from_row(webhooks.get_endpoint(session, caller.account_id, endpoint_id))


@router.delete("/{endpoint_id}", responses=error_responses(401, 404))
def delete_webhook_endpoint(
    caller: CurrentCaller, sessions: SessionsDep, endpoint_id: str
) -> DeletedWebhookEndpoint:
    with sessions() as session:
        deleted = webhooks.delete_endpoint(session, caller.account_id, endpoint_id)
        return DeletedWebhookEndpoint(id=deleted.id)

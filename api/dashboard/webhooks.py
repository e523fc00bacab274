"""``/dashboard/webhooks``: the account's webhook endpoints and each one's latest delivery attempts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.dashboard.deps import DeveloperDep
from api.dashboard.pages import render
from api.deps import SessionsDep
from hybatch import webhooks

router = APIRouter(prefix="/dashboard", include_in_schema=False)

ATTEMPTS_SHOWN = 10


@router.get("/webhooks")
def webhooks_page(request: Request, viewer: DeveloperDep, sessions: SessionsDep) -> HTMLResponse:
    with sessions() as db:
        endpoints = webhooks.list_endpoints(db, viewer.account_id, after=None, limit=100).items
        deliveries = {
            endpoint.id: webhooks.recent_deliveries(db, endpoint.id, ATTEMPTS_SHOWN) for endpoint in endpoints
        }
        return render(
            request, "webhooks.html", viewer, active="webhooks", endpoints=endpoints, deliveries=deliveries
        )

"""``/dashboard``: the signed-in account's usage for a chosen range."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.dashboard.deps import DeveloperDep
from api.dashboard.pages import render
from api.dashboard.ranges import PRESETS, parse_range, recent_months
from api.dashboard.usage_view import usage_view
from api.deps import SessionDep
from hybatch.models import utc_now

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
def usage_page(
    request: Request,
    viewer: DeveloperDep,
    db: SessionDep,
    range: str | None = None,  # noqa: A002 - the query parameter's name
    month: str | None = None,
) -> HTMLResponse:
    now = utc_now()
    usage_range = parse_range(range, month, now)
    assert viewer.account_id is not None  # a developer session always names its account
    view = usage_view(db, viewer.account_id, usage_range, now)
    return render(
        request,
        "usage.html",
        viewer,
        active="usage",
        view=view,
        presets=PRESETS,
        months=recent_months(now),
        form_action="/dashboard",
    )

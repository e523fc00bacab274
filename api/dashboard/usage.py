"""``/dashboard``: the signed-in account's usage for a chosen range."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.dashboard.deps import DeveloperDep
from api.dashboard.pages import render
from api.dashboard.ranges import PRESETS, UsageRangeDep, recent_months
from api.dashboard.usage_view import usage_view
from api.deps import SessionDep

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
def usage_page(
    request: Request, viewer: DeveloperDep, db: SessionDep, usage_range: UsageRangeDep
) -> HTMLResponse:
    return render(
        request,
        "usage.html",
        viewer,
        active="usage",
        view=usage_view(db, viewer.account_id, usage_range, usage_range.end),
        presets=PRESETS,
        months=recent_months(usage_range.end),
        form_action="/dashboard",
    )

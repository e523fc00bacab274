"""``/dashboard``: the signed-in account's usage for a chosen range."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from api.dashboard.deps import DeveloperDep, Viewer
from api.dashboard.pages import render
from api.dashboard.ranges import PRESETS, UsageRange, UsageRangeDep, recent_months
from api.dashboard.usage_view import usage_view
from api.deps import SessionsDep
from hybatch.models import Account

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("")
def usage_page(
    request: Request, viewer: DeveloperDep, sessions: SessionsDep, usage_range: UsageRangeDep
) -> HTMLResponse:
    with sessions() as db:
        return render_usage(request, viewer, db, viewer.account_id, usage_range, form_action="/dashboard")


def render_usage(
    request: Request,
    viewer: Viewer,
    db: Session,
    account_id: str,
    usage_range: UsageRange,
    *,
    form_action: str,
    viewed_account: Account | None = None,
) -> HTMLResponse:
    """The usage page of ``account_id`` (an operator's view of it when ``viewed_account`` is given)."""
    return render(
        request,
        "usage.html",
        viewer,
        active="admin" if viewed_account is not None else "usage",
        view=usage_view(db, account_id, usage_range, usage_range.end),
        presets=PRESETS,
        months=recent_months(usage_range.end),
        form_action=form_action,
        viewed_account=viewed_account,
    )

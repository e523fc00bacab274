"""``/dashboard/admin``: the operator's view of every account (read-only)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from api.dashboard.deps import AdminDep
from api.dashboard.pages import render
from api.dashboard.ranges import PRESETS, UsageRangeDep, recent_months
from api.dashboard.usage import render_usage
from api.deps import SessionsDep
from api.downloads import ExportFormat, export_download
from billing.invoicing.invoices import closed_periods
from billing.usage.by_account import usage_by_account
from hybatch.errors import NotFoundError
from hybatch.models import Account

router = APIRouter(prefix="/dashboard/admin", include_in_schema=False)


@router.get("")
def accounts_page(
    request: Request, viewer: AdminDep, sessions: SessionsDep, usage_range: UsageRangeDep
) -> HTMLResponse:
    with sessions() as db:
        return render(
            request,
            "admin.html",
            viewer,
            active="admin",
            rows=usage_by_account(db, usage_range.start, usage_range.end),
            periods=closed_periods(db),
            usage_range=usage_range,
            presets=PRESETS,
            months=recent_months(usage_range.end),
            form_action="/dashboard/admin",
        )


@router.get("/accounts/{account_id}")
def account_page(
    request: Request, viewer: AdminDep, sessions: SessionsDep, account_id: str, usage_range: UsageRangeDep
) -> HTMLResponse:
    with sessions() as db:
        account = db.get(Account, account_id)
        if account is None:
            raise NotFoundError(f"No account with id '{account_id}'.", code="account_not_found")
        return render_usage(
            request,
            viewer,
            db,
            account.id,
            usage_range,
            form_action=f"/dashboard/admin/accounts/{account.id}",
            viewed_account=account,
        )


@router.get("/exports/{period}.{export_format}")
def export_all(
    _viewer: AdminDep, sessions: SessionsDep, period: str, export_format: ExportFormat
) -> StreamingResponse:
    """The month's billing export of every account."""
    with sessions() as db:
        return export_download(db, period, export_format, None)

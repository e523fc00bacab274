"""``/dashboard/invoices``: the upcoming invoice, prepaid credit and alerts, past invoices, exports, the price sheet."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy.orm import Session

from api.dashboard.deps import Developer, DeveloperDep
from api.dashboard.pages import render
from api.dashboard.price_view import price_bands
from api.deps import SessionsDep
from api.downloads import ExportFormat, export_download
from billing.alerts import recent_alerts
from billing.credits.balance import credit_balance
from billing.invoicing import invoices
from billing.invoicing.credit_notes import credit_notes_of, total_less_credit_notes
from billing.invoicing.line_labels import line_labels
from billing.invoicing.upcoming import upcoming_invoices
from billing.limits.spend_limits import ACCOUNT_SCOPE, limit_states
from billing.periods import Period
from billing.pricing.price_sheet import price_sheet, schedule_versions
from billing.pricing.schedule_store import NoScheduleInEffectError
from billing.pricing.schedule_version import TokenClass
from hybatch.errors import HybatchError
from hybatch.models import BillingPeriodClose, utc_now

router = APIRouter(prefix="/dashboard", include_in_schema=False)

TOKEN_CLASS_LABELS = {
    TokenClass.CACHE_HIT_INPUT: "Cache-hit input",
    TokenClass.CACHE_MISS_INPUT: "Cache-miss input",
    TokenClass.OUTPUT: "Output",
}


def _closed_months(db: Session) -> set[str]:
    """Months closed into invoices (``YYYY-MM``): only their usage can arrive late."""
    return set(db.scalars(sa.select(BillingPeriodClose.period)))


@router.get("/invoices")
def invoices_page(request: Request, viewer: DeveloperDep, sessions: SessionsDep) -> HTMLResponse:
    with sessions() as db:
        return _invoices_page(request, viewer, db)


def _invoices_page(request: Request, viewer: Developer, db: Session) -> HTMLResponse:
    now = utc_now()
    try:
        sheet = price_sheet(db, viewer.account_id, now, served_model=request.app.state.settings.model_name)
    except NoScheduleInEffectError:
        sheet = None
    try:
        *ended, upcoming = upcoming_invoices(db, viewer.account_id, now)
        upcoming_problem = None
    except HybatchError as error:  # unpriced usage, no schedule, mixed currencies: the close would fail too
        ended, upcoming, upcoming_problem = [], None, error.message
    previews = [*ended, upcoming] if upcoming is not None else []
    versions = schedule_versions(db, {line.price_version for preview in previews for line in preview.lines})
    return render(
        request,
        "invoices.html",
        viewer,
        active="invoices",
        upcoming=upcoming,
        ended=ended,
        labels={preview.period: line_labels(versions, preview.lines) for preview in previews},
        closed_months=_closed_months(db),
        upcoming_problem=upcoming_problem,
        period=Period.containing(now),
        past=invoices.list_invoices(db, viewer.account_id),
        credits=credit_balance(db, viewer.account_id, now),
        alerts=recent_alerts(db, viewer.account_id),
        limits=limit_states(db, viewer.account_id, None, now),
        sheet=sheet,
        bands=price_bands(sheet) if sheet is not None else [],
        token_classes=list(TokenClass),
        class_labels=TOKEN_CLASS_LABELS,
        account_scope=ACCOUNT_SCOPE,
    )


@router.get("/invoices/{invoice_id}")
def invoice_page(
    request: Request, viewer: DeveloperDep, sessions: SessionsDep, invoice_id: str
) -> HTMLResponse:
    with sessions() as db:
        invoice = invoices.get_invoice(db, viewer.account_id, invoice_id)
        lines = invoices.invoice_lines(db, invoice.id)
        credit = invoices.invoice_credit(db, invoice.id)
        notes = credit_notes_of(db, invoice.id)
        versions = schedule_versions(db, {line.price_version for line in lines})
        closed_months = _closed_months(db)
    return render(
        request,
        "invoice.html",
        viewer,
        active="invoices",
        invoice=invoice,
        credit=credit,
        credit_notes=notes,
        total_after_credit_notes=total_less_credit_notes(invoice, notes),
        lines=lines,
        labels=line_labels(versions, lines),
        closed_months=closed_months,
    )


@router.get("/exports/{period}.{export_format}")
def export(
    viewer: DeveloperDep, sessions: SessionsDep, period: str, export_format: ExportFormat
) -> StreamingResponse:
    """The month's billing export for the viewer's account, as a download."""
    with sessions() as db:  # the rows are read here; the export streams with the session closed
        return export_download(db, period, export_format, viewer.account_id)

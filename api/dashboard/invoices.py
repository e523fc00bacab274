"""``/dashboard/invoices``: the upcoming invoice, past invoices, monthly exports, the price sheet."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from api.dashboard.deps import DeveloperDep
from api.dashboard.pages import render
from api.dashboard.price_view import price_bands
from api.deps import SessionDep
from api.downloads import ExportFormat, export_download
from billing import invoices
from billing.periods import Period
from billing.price_sheet import price_sheet
from billing.schedule import TokenClass
from billing.schedules import NoScheduleInEffectError
from billing.upcoming_invoice import upcoming_invoice
from hybatch.errors import HybatchError
from hybatch.models import utc_now

router = APIRouter(prefix="/dashboard", include_in_schema=False)

TOKEN_CLASS_LABELS = {
    TokenClass.CACHE_HIT_INPUT: "Cache-hit input",
    TokenClass.CACHE_MISS_INPUT: "Cache-miss input",
    TokenClass.OUTPUT: "Output",
}


@router.get("/invoices")
def invoices_page(request: Request, viewer: DeveloperDep, db: SessionDep) -> HTMLResponse:
    now = utc_now()
    try:
        sheet = price_sheet(db, viewer.account_id, now)
    except NoScheduleInEffectError:
        sheet = None
    try:
        upcoming, upcoming_problem = upcoming_invoice(db, viewer.account_id, now), None
    except HybatchError as error:  # unpriced usage, no schedule, mixed currencies: the close would fail too
        upcoming, upcoming_problem = None, error.message
    return render(
        request,
        "invoices.html",
        viewer,
        active="invoices",
        upcoming=upcoming,
        upcoming_problem=upcoming_problem,
        period=Period.containing(now),
        past=invoices.list_invoices(db, viewer.account_id),
        sheet=sheet,
        bands=price_bands(sheet) if sheet is not None else [],
        token_classes=list(TokenClass),
        class_labels=TOKEN_CLASS_LABELS,
    )


@router.get("/invoices/{invoice_id}")
def invoice_page(request: Request, viewer: DeveloperDep, db: SessionDep, invoice_id: str) -> HTMLResponse:
    invoice = invoices.get_invoice(db, viewer.account_id, invoice_id)
    return render(
        request,
        "invoice.html",
        viewer,
        active="invoices",
        invoice=invoice,
        lines=invoices.invoice_lines(db, invoice.id),
    )


@router.get("/exports/{period}.{export_format}")
def export(
    viewer: DeveloperDep, db: SessionDep, period: str, export_format: ExportFormat
) -> StreamingResponse:
    """The month's billing export for the viewer's account, as a download."""
    return export_download(db, period, export_format, viewer.account_id)

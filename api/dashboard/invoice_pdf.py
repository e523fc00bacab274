"""Invoice PDFs on the dashboard: a developer downloads their own (``/dashboard/invoices/{id}/pdf``);
an operator lists any account's invoices and downloads any of them (``/dashboard/admin/...``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.dashboard.deps import AdminDep, DeveloperDep
from api.dashboard.pages import render
from api.deps import SessionsDep
from api.routes.billing import BillingSettingsDep
from billing.invoicing.invoice_document import InvoiceDocument, invoice_document
from billing.invoicing.invoices import list_invoices
from billing.invoicing.pdf import render_invoice_pdf
from billing.settings import BillingSettings
from hybatch.errors import NotFoundError
from hybatch.models import Account, Invoice

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _pdf_download(document: InvoiceDocument, billing_settings: BillingSettings) -> Response:
    return Response(
        render_invoice_pdf(document, issuer=billing_settings.invoice_issuer),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
    )


@router.get("/invoices/{invoice_id}/pdf")
def invoice_pdf(
    viewer: DeveloperDep, sessions: SessionsDep, billing_settings: BillingSettingsDep, invoice_id: str
) -> Response:
    """The invoice as the operator sends it; another account's invoice answers 404 like a missing one."""
    with sessions() as db:
        document = invoice_document(db, viewer.account_id, invoice_id)
    return _pdf_download(document, billing_settings)


@router.get("/admin/accounts/{account_id}/invoices")
def account_invoices_page(
    request: Request, viewer: AdminDep, sessions: SessionsDep, account_id: str
) -> HTMLResponse:
    """An account's invoices, newest first, each with its PDF (operators)."""
    with sessions() as db:
        account = db.get(Account, account_id)
        if account is None:
            raise NotFoundError(f"No account with id '{account_id}'.", code="account_not_found")
        rows = list_invoices(db, account.id)
    return render(request, "admin_invoices.html", viewer, active="admin", account=account, invoices=rows)


@router.get("/admin/invoices/{invoice_id}/pdf")
def any_invoice_pdf(
    _viewer: AdminDep, sessions: SessionsDep, billing_settings: BillingSettingsDep, invoice_id: str
) -> Response:
    """Any account's invoice as a PDF (operators)."""
    with sessions() as db:
        invoice = db.get(Invoice, invoice_id)
        if invoice is None:
            raise NotFoundError(f"No invoice with id '{invoice_id}'.", code="invoice_not_found")
        document = invoice_document(db, invoice.account_id, invoice.id)
    return _pdf_download(document, billing_settings)

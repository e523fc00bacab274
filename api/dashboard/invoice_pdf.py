"""``/dashboard/invoices/{id}/pdf``: a finalized invoice of the viewer's account as a PDF download."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.dashboard.deps import DeveloperDep
from api.deps import SessionsDep
from api.routes.billing import BillingSettingsDep
from billing.invoicing.invoice_document import invoice_document
from billing.invoicing.pdf import render_invoice_pdf

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@router.get("/invoices/{invoice_id}/pdf")
def invoice_pdf(
    viewer: DeveloperDep, sessions: SessionsDep, billing_settings: BillingSettingsDep, invoice_id: str
) -> Response:
    """The invoice as the operator sends it; another account's invoice answers 404 like a missing one."""
    with sessions() as db:
        document = invoice_document(db, viewer.account_id, invoice_id)
    return Response(
        render_invoice_pdf(document, issuer=billing_settings.invoice_issuer),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
    )

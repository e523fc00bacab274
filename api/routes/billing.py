"""``/v1/billing``: price preview, a batch's cost so far, prepaid credit, invoices, exports, the Stripe webhook."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCaller, SessionsDep, SettingsDep, StorageDep
from api.downloads import export_download
from api.openapi import error_responses
from billing.credits.balance import credit_balance
from billing.invoicing import invoices
from billing.invoicing.credit_notes import credit_notes_of
from billing.limits.spend_limits import ACCOUNT_SCOPE, limit_states
from billing.money import decimal_string, minor_to_decimal
from billing.payments import stripe_sync
from billing.pricing import cost_estimate
from billing.pricing.request_cost import batch_cost_so_far
from billing.settings import BillingSettings, get_billing_settings
from hybatch import batches
from hybatch.db import unit_of_work
from hybatch.models import Invoice, InvoiceCredit, InvoiceLine

router = APIRouter(prefix="/v1/billing", tags=["billing"])


def get_billing_settings_dep(request: Request) -> BillingSettings:
    """``app.state.billing_settings`` when the app was given some, else the environment's."""
    return getattr(request.app.state, "billing_settings", None) or get_billing_settings()


BillingSettingsDep = Annotated[BillingSettings, Depends(get_billing_settings_dep)]


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str


@router.post("/estimate", responses=error_responses(400, 401, 404, 413))
def estimate_cost(
    body: EstimateRequest,
    caller: CurrentCaller,
    sessions: SessionsDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    with sessions() as session:
        estimate = cost_estimate.estimate_file(
            session,
            storage,
            settings,
            account_id=caller.account_id,
            input_file_id=body.input_file_id,
            endpoint=body.endpoint,
        )
    return {
        **estimate.as_dict(),
        "input_file_id": body.input_file_id,
        "endpoint": body.endpoint,
        "model": settings.model_name,
    }


@router.get("/batches/{batch_id}/cost", responses=error_responses(401, 404))
def batch_cost(caller: CurrentCaller, sessions: SessionsDep, batch_id: str) -> dict[str, Any]:
    with sessions() as session:
        batch = batches.get_batch(session, caller.account_id, batch_id)
        cost = batch_cost_so_far(session, batch.id)
    return {
        "object": "billing.batch_cost",
        "batch_id": batch.id,
        "amount": decimal_string(cost.amount),
        "currency": cost.currency,
        "priced_requests": cost.priced_requests,
        "unpriced_requests": cost.unpriced_requests,
    }


@router.get("/credits", responses=error_responses(401))
def credits(caller: CurrentCaller, sessions: SessionsDep) -> dict[str, Any]:
    """The caller's prepaid credit: balance, what running requests hold, and every grant."""
    with sessions() as session:
        state = credit_balance(session, caller.account_id)
    if state is None:
        return {
            "object": "billing.credit_balance",
            "prepaid": False,
            "currency": None,
            "balance": None,
            "held": None,
            "spendable": None,
            "grants": [],
        }
    return {
        "object": "billing.credit_balance",
        "prepaid": True,
        "currency": state.currency,
        "balance": decimal_string(state.balance),
        "held": decimal_string(state.held),
        "spendable": decimal_string(state.spendable),
        "grants": [
            {
                "id": grant.grant_id,
                "amount": decimal_string(grant.amount),
                "drawn": decimal_string(grant.drawn),
                "remaining": decimal_string(grant.remaining),
                "priority": grant.priority,
                "expires_at": int(grant.expires_at.timestamp()) if grant.expires_at else None,
                "created_at": int(grant.created_at.timestamp()),
                "expired": not grant.is_live,
            }
            for grant in state.grants
        ],
    }


@router.get("/limits", responses=error_responses(401))
def spend_limits(caller: CurrentCaller, sessions: SessionsDep) -> dict[str, Any]:
    """The monthly spend limits that apply to the caller's key (the account's and the key's own),
    with this month's spend and what running requests hold."""
    with sessions() as session:
        states = limit_states(session, caller.account_id, caller.api_key_id)
    return {
        "object": "list",
        "data": [
            {
                "object": "billing.spend_limit",
                "scope": "account" if state.scope == ACCOUNT_SCOPE else "api_key",
                "api_key_id": None if state.scope == ACCOUNT_SCOPE else state.scope,
                "api_key_prefix": state.key_prefix,
                "period": str(state.period),
                "currency": state.currency,
                "soft": None if state.soft is None else decimal_string(state.soft),
                "hard": None if state.hard is None else decimal_string(state.hard),
                "spent": decimal_string(state.spent),
                "held": decimal_string(state.held),
            }
            for state in states
        ],
        "has_more": False,
    }


def _invoice_object(
    invoice: Invoice, lines: list[InvoiceLine] | None = None, credit: InvoiceCredit | None = None
) -> dict[str, Any]:
    credit_minor = 0 if credit is None else credit.amount_minor
    body: dict[str, Any] = {
        "id": invoice.id,
        "object": "billing.invoice",
        "period": invoice.period,
        "status": invoice.status.value,
        "currency": invoice.currency,
        "total_minor": invoice.total_minor,
        "total": str(minor_to_decimal(invoice.total_minor, invoice.currency)),
        "total_unrounded": decimal_string(invoice.total_amount),
        "credit_applied_minor": credit_minor,  # prepaid credit deducted; total = lines - credit
        "finalized_at": int(invoice.finalized_at.timestamp()),
        "paid_at": int(invoice.paid_at.timestamp()) if invoice.paid_at else None,
    }
    if lines is not None:
        body["lines"] = [
            {
                "line_number": line.line_number,
                "origin_period": line.origin_period,
                "is_adjustment": line.is_adjustment,
                "price_version": line.price_version,
                "model": line.model,
                "token_class": line.token_class,
                "context_tier": line.context_tier,
                "price_tier": line.price_tier,
                "tokens": line.tokens,
                "unit_price": decimal_string(line.unit_price),
                "amount_unrounded": decimal_string(line.amount),
                "amount_minor": line.amount_minor,
            }
            for line in lines
        ]
    return body


@router.get("/invoices", responses=error_responses(401))
def list_invoices(caller: CurrentCaller, sessions: SessionsDep) -> dict[str, Any]:
    with sessions() as session:
        rows = invoices.list_invoices(session, caller.account_id)
        data = [_invoice_object(row, credit=invoices.invoice_credit(session, row.id)) for row in rows]
        return {"object": "list", "data": data, "has_more": False}


@router.get("/invoices/{invoice_id}", responses=error_responses(401, 404))
def retrieve_invoice(caller: CurrentCaller, sessions: SessionsDep, invoice_id: str) -> dict[str, Any]:
    with sessions() as session:
        invoice = invoices.get_invoice(session, caller.account_id, invoice_id)
        lines = invoices.invoice_lines(session, invoice.id)
        body = _invoice_object(invoice, lines, invoices.invoice_credit(session, invoice.id))
        body["credit_notes"] = [
            {
                "id": note.id,
                "object": "billing.credit_note",
                "number": note.number,
                "reason": note.reason,
                "currency": note.currency,
                "total_minor": note.total_minor,
                "created_at": int(note.created_at.timestamp()),
                "lines": [
                    {"invoice_line_number": line.invoice_line_number, "amount_minor": line.amount_minor}
                    for line in note_lines
                ],
            }
            for note, note_lines in credit_notes_of(session, invoice.id)
        ]
        return body


@router.get(
    "/exports",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The closed month's export as an attachment",
            "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {}},
        },
        **error_responses(400, 401, 409),
    },
)
def export(
    caller: CurrentCaller,
    sessions: SessionsDep,
    period: str,
    format: Literal["csv", "json"] = "csv",  # noqa: A002 - the query parameter's name
) -> StreamingResponse:
    with sessions() as session:  # the rows are read here; the export streams with the session closed
        return export_download(session, period, format, caller.account_id)


@router.post("/stripe/webhook", responses=error_responses(400, 413, 503))
async def stripe_webhook(request: Request, billing_settings: BillingSettingsDep) -> dict[str, Any]:
    """Stripe calls this (no bearer key: the ``Stripe-Signature`` header authenticates it)."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature")

    def handle() -> stripe_sync.WebhookResult:
        with unit_of_work(request.app.state.session_factory) as session:
            return stripe_sync.handle_webhook(session, payload, signature, billing_settings)

    result = await run_in_threadpool(handle)
    return {"received": True, "id": result.event_id, "type": result.event_type, "outcome": result.outcome}

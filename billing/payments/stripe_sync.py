"""Stripe: push finalized invoices (customer, invoice items, finalize) and credit notes, apply webhook events.

The only module that imports ``stripe``. Every Stripe write carries a deterministic idempotency
key built from our ids, so a retry after a crash or a lost response gets the object Stripe
already made instead of a second one::

    hybatch-customer-{account_id}            hybatch-invoice-{invoice_id}
    hybatch-invoice-item-{invoice_id}-{line_number}     hybatch-finalize-{invoice_id}
    hybatch-invoice-credit-{invoice_id}                 hybatch-credit-note-{credit_note_id}

``push_invoice`` commits after recording each Stripe object, so a crash never forgets an object
that exists. Webhook events are verified with ``stripe.Webhook.construct_event`` and handled once
per event id (``stripe_events``), in the same transaction as the status change they cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.invoices import invoice_credit, invoice_lines
from billing.periods import Period
from billing.settings import BillingSettings
from billing.sql import insert_ignoring_conflicts
from hybatch.db import unit_of_work
from hybatch.errors import ConflictError, InvalidRequestError, ServiceUnavailableError
from hybatch.models import (
    Account,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceStatus,
    StripeCustomer,
    StripeEvent,
    StripeInvoiceItem,
    utc_now,
)

# Which statuses an event may move an invoice from, and to.
_EVENT_MOVES: dict[str, tuple[InvoiceStatus, frozenset[InvoiceStatus]]] = {
    "invoice.paid": (InvoiceStatus.PAID, frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED})),
    "invoice.payment_failed": (
        InvoiceStatus.PAYMENT_FAILED,
        frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED}),
    ),
    "invoice.voided": (InvoiceStatus.VOID, frozenset({InvoiceStatus.OPEN, InvoiceStatus.PAYMENT_FAILED})),
}
_STATUS_TIMESTAMP = {
    InvoiceStatus.PAID: "paid_at",
    InvoiceStatus.PAYMENT_FAILED: "payment_failed_at",
    InvoiceStatus.VOID: "voided_at",
}


class StripeMismatchError(ConflictError):
    """Stripe's finalized invoice does not add up to ours; it stays unmarked for an operator."""


@dataclass(frozen=True)
class PushResult:
    invoice_id: str
    stripe_invoice_id: str | None  # None: nothing to collect (a zero invoice is not pushed)
    items_created: int
    finalized: bool  # True when this call finalized it in Stripe


@dataclass(frozen=True)
class WebhookResult:
    event_id: str
    event_type: str
    outcome: str  # "applied", "ignored" or "duplicate"
    invoice_id: str | None


def stripe_client(settings: BillingSettings) -> stripe.StripeClient:
    """A client for the configured key (and API base); raises ServiceUnavailableError without a key."""
    if not settings.stripe_api_key:
        raise ServiceUnavailableError(
            "Stripe is not configured (HYBATCH_STRIPE_API_KEY)", code="stripe_disabled"
        )
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
    return stripe.StripeClient(settings.stripe_api_key, base_addresses=base, max_network_retries=2)


def _key(*parts: object) -> dict[str, str]:
    return {"idempotency_key": "hybatch-" + "-".join(str(part) for part in parts)}


def _ensure_customer(session: Session, client: stripe.StripeClient, account_id: str) -> str:
    existing = session.get(StripeCustomer, account_id)
    if existing is not None:
        return existing.stripe_customer_id
    account = session.get(Account, account_id)
    name = account.name if account is not None else account_id
    customer = client.v1.customers.create(
        params={"name": name, "metadata": {"hybatch_account_id": account_id}},
        options=_key("customer", account_id),
    )
    insert_ignoring_conflicts(
        session,
        StripeCustomer,
        {"account_id": account_id, "stripe_customer_id": customer.id, "created_at": utc_now()},
    )
    session.commit()
    return session.get(StripeCustomer, account_id).stripe_customer_id


def push_invoice(session: Session, client: stripe.StripeClient, invoice_id: str) -> PushResult:
    """Mirror one finalized invoice in Stripe and finalize it there; safe to repeat.

    Creates the account's customer if needed, a draft invoice, one invoice item per line with a
    non-zero amount (amount = the line's ``amount_minor``) and a negative one for the prepaid
    credit deducted, then finalizes it (Stripe collects).
    Commits after each Stripe object. Raises StripeMismatchError when Stripe's subtotal differs.
    """
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise InvalidRequestError(f"no invoice {invoice_id}", code="invoice_not_found")
    lines = [line for line in invoice_lines(session, invoice.id) if line.amount_minor != 0]
    if invoice.stripe_finalized_at is not None or invoice.status is InvoiceStatus.VOID or not lines:
        return PushResult(invoice.id, invoice.stripe_invoice_id, 0, finalized=False)
    customer_id = _ensure_customer(session, client, invoice.account_id)
    if invoice.stripe_invoice_id is None:
        created = client.v1.invoices.create(
            params={
                "customer": customer_id,
                "currency": invoice.currency,
                "collection_method": "charge_automatically",
                "auto_advance": False,
                "pending_invoice_items_behavior": "exclude",
                "description": f"hybatch usage {invoice.period}",
                "metadata": {"hybatch_invoice_id": invoice.id, "hybatch_period": invoice.period},
            },
            options=_key("invoice", invoice.id),
        )
        invoice.stripe_invoice_id = created.id
        session.commit()
    done = set(
        session.scalars(
            sa.select(StripeInvoiceItem.invoice_line_id).where(
                StripeInvoiceItem.invoice_line_id.in_([line.id for line in lines])
            )
        )
    )
    items_created = 0
    for line in lines:
        if line.id in done:
            continue
        item = client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "invoice": invoice.stripe_invoice_id,
                "amount": line.amount_minor,
                "currency": line.currency,
                "description": _line_description(line),
                "metadata": {"hybatch_invoice_id": invoice.id, "hybatch_line_number": str(line.line_number)},
            },
            options=_key("invoice-item", invoice.id, line.line_number),
        )
        session.add(StripeInvoiceItem(invoice_line_id=line.id, stripe_invoice_item_id=item.id))
        session.commit()
        items_created += 1
    credit = invoice_credit(session, invoice.id)
    if credit is not None and credit.amount_minor > 0 and credit.stripe_invoice_item_id is None:
        # Prepaid credit as one negative invoice item: Stripe's subtotal is then what is due.
        item = client.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "invoice": invoice.stripe_invoice_id,
                "amount": -credit.amount_minor,
                "currency": credit.currency,
                "description": "Prepaid credit applied",
                "metadata": {"hybatch_invoice_id": invoice.id, "hybatch_credit": "prepaid"},
            },
            options=_key("invoice-credit", invoice.id),
        )
        credit.stripe_invoice_item_id = item.id
        session.commit()
        items_created += 1
    finalized = client.v1.invoices.finalize_invoice(
        invoice.stripe_invoice_id, params={"auto_advance": True}, options=_key("finalize", invoice.id)
    )
    if finalized.subtotal != invoice.total_minor:
        raise StripeMismatchError(
            f"Stripe invoice {finalized.id} totals {finalized.subtotal}, invoice {invoice.id} {invoice.total_minor}"
        )
    invoice.stripe_finalized_at = utc_now()
    session.commit()
    return PushResult(invoice.id, invoice.stripe_invoice_id, items_created, finalized=True)


def _line_description(line: Any) -> str:
    late = f" (late usage from {line.origin_period})" if line.is_adjustment else ""
    repriced = f" repriced from tier {line.repriced_from_tier}" if line.repriced_from_tier else ""
    return (
        f"{line.model} {line.token_class} {line.context_tier} tier {line.price_tier}{repriced}: "
        f"{line.tokens} tokens at {line.unit_price}/1M ({line.price_version}){late}"
    )


def push_open_invoices(
    session_factory: sessionmaker[Session], client: stripe.StripeClient, period: Period | None = None
) -> list[PushResult]:
    """Push every invoice not yet finalized in Stripe (of ``period`` when given)."""
    with session_factory() as session:
        query = sa.select(Invoice.id).where(
            Invoice.stripe_finalized_at.is_(None), Invoice.status != InvoiceStatus.VOID
        )
        if period is not None:
            query = query.where(Invoice.period == str(period))
        invoice_ids = list(session.scalars(query.order_by(Invoice.period, Invoice.id)))
    results = []
    for invoice_id in invoice_ids:
        with unit_of_work(session_factory) as session:
            results.append(push_invoice(session, client, invoice_id))
    return results


def push_credit_note(session: Session, client: stripe.StripeClient, credit_note_id: str) -> str | None:
    """Mirror one credit note as a Stripe credit note on its Stripe invoice; safe to repeat.

    One custom line per credit note line (amount = its ``amount_minor``), the reason as the memo,
    idempotency key ``hybatch-credit-note-{id}``; on an invoice already paid the whole note is
    credited to the customer's Stripe balance (``credit_amount``). Commits once Stripe's id is recorded. Returns that
    id, or None while the invoice is not finalized in Stripe yet (push the invoice first).
    """
    note = session.get(CreditNote, credit_note_id)
    if note is None:
        raise InvalidRequestError(f"no credit note {credit_note_id}", code="credit_note_not_found")
    if note.stripe_credit_note_id is not None:
        return note.stripe_credit_note_id
    invoice = session.get(Invoice, note.invoice_id)
    if invoice.stripe_invoice_id is None or invoice.stripe_finalized_at is None:
        return None
    lines = session.scalars(
        sa.select(CreditNoteLine)
        .where(CreditNoteLine.credit_note_id == note.id)
        .order_by(CreditNoteLine.line_number)
    ).all()
    params: dict[str, Any] = {
        "invoice": invoice.stripe_invoice_id,
        "memo": note.reason,
        "lines": [
            {
                "type": "custom_line_item",
                "description": f"Correction of invoice line {line.invoice_line_number}",
                "quantity": 1,
                "unit_amount": line.amount_minor,
            }
            for line in lines
        ],
        "metadata": {"hybatch_credit_note_id": note.id, "hybatch_invoice_id": invoice.id},
    }
    if invoice.status is InvoiceStatus.PAID:
        # A note on a paid invoice must say where the money goes (Stripe refuses it otherwise): to the
        # customer's Stripe balance, which pays their next invoice. A refund is the operator's call,
        # made in Stripe.
        params["credit_amount"] = note.total_minor
    created = client.v1.credit_notes.create(params=params, options=_key("credit-note", note.id))
    if created.total != note.total_minor:
        raise StripeMismatchError(
            f"Stripe credit note {created.id} totals {created.total}, {note.id} {note.total_minor}"
        )
    note.stripe_credit_note_id = created.id
    session.commit()
    return created.id


def push_open_credit_notes(
    session_factory: sessionmaker[Session], client: stripe.StripeClient
) -> list[tuple[str, str | None]]:
    """Push every credit note not yet in Stripe; (credit note id, Stripe id or None) for each."""
    with session_factory() as session:
        note_ids = list(
            session.scalars(
                sa.select(CreditNote.id)
                .where(CreditNote.stripe_credit_note_id.is_(None))
                .order_by(CreditNote.created_at, CreditNote.id)
            )
        )
    results = []
    for note_id in note_ids:
        with unit_of_work(session_factory) as session:
            results.append((note_id, push_credit_note(session, client, note_id)))
    return results


def handle_webhook(
    session: Session,
    payload: bytes,
    signature: str | None,
    settings: BillingSettings,
    *,
    now: datetime | None = None,
) -> WebhookResult:
    """Verify and apply one webhook delivery. No commit (the caller's unit of work commits).

    Raises InvalidRequestError (400) for a bad or stale signature, ServiceUnavailableError when
    no webhook secret is configured. A repeated event id changes nothing (``duplicate``).
    """
    if not settings.stripe_webhook_secret:
        raise ServiceUnavailableError(
            "Stripe webhooks are not configured (HYBATCH_STRIPE_WEBHOOK_SECRET)", code="stripe_disabled"
        )
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, settings.stripe_webhook_secret, tolerance=settings.stripe_webhook_tolerance_s
        )
    except stripe.SignatureVerificationError as error:
        raise InvalidRequestError(f"Invalid Stripe signature: {error}", code="invalid_signature") from error
    except ValueError as error:
        raise InvalidRequestError(
            "The webhook body is not a Stripe event.", code="invalid_payload"
        ) from error
    now = now or utc_now()
    invoice = _event_invoice(session, event)
    invoice_id = invoice.id if invoice is not None else None
    # Claim the event id first: a concurrent or later delivery of it finds it taken.
    values = {
        "id": event.id,
        "type": event.type,
        "invoice_id": invoice_id,
        "outcome": "received",
        "received_at": now,
    }
    if not insert_ignoring_conflicts(session, StripeEvent, values):
        return WebhookResult(event.id, event.type, "duplicate", invoice_id)
    outcome = _apply(invoice, event.type, now)
    session.execute(sa.update(StripeEvent).where(StripeEvent.id == event.id).values(outcome=outcome))
    session.flush()
    return WebhookResult(event.id, event.type, outcome, invoice_id)


def _event_invoice(session: Session, event: Any) -> Invoice | None:
    if not event.type.startswith("invoice."):
        return None
    stripe_object = event.data.object.to_dict()
    invoice = session.scalar(sa.select(Invoice).where(Invoice.stripe_invoice_id == stripe_object.get("id")))
    if invoice is None:
        ours = (stripe_object.get("metadata") or {}).get("hybatch_invoice_id")
        invoice = session.get(Invoice, ours) if ours else None
    return invoice


def _apply(invoice: Invoice | None, event_type: str, now: datetime) -> str:
    move = _EVENT_MOVES.get(event_type)
    if invoice is None or move is None:
        return "ignored"
    to_status, from_statuses = move
    if invoice.status not in from_statuses:
        return "ignored"  # e.g. a late payment_failed after paid: paid stands
    invoice.status = to_status
    setattr(invoice, _STATUS_TIMESTAMP[to_status], now)
    return "applied"

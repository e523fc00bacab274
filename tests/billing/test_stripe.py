"""Stripe sync and webhooks with the real ``stripe`` SDK against a local recording server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import stripe
from sqlalchemy.orm import Session

from billing.invoicing.invoices import close_period, list_invoices
from billing.payments.stripe_sync import handle_webhook, push_invoice, push_open_invoices, stripe_client
from billing.periods import Period
from billing.settings import BillingSettings
from hybatch.errors import InvalidRequestError, ServiceUnavailableError
from hybatch.models import Invoice, InvoiceStatus, StripeCustomer, StripeEvent, StripeInvoiceItem
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.stripe_server import StripeServer

SECRET = "whsec_test_secret"
API_KEY = "sk_test_hybatch"


@pytest.fixture
def server() -> Iterator[StripeServer]:
    with StripeServer() as running:
        yield running


@pytest.fixture
def client(server: StripeServer) -> stripe.StripeClient:
    return stripe_client(BillingSettings(stripe_api_key=API_KEY, stripe_api_base=server.url))


@pytest.fixture
def invoice(session: Session) -> Invoice:
    """March invoice of "acme" on the default schedule: lines hit 0c (1), miss 14c (2), output 210c (3)."""
    customer = add_customer(session, "acme")
    add_usage(session, customer, at("2026-03-03 10:00"), hit=100, miss=200_000, out=1_000_000)
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    session.commit()
    (row,) = list_invoices(session, customer.account_id)
    assert row.total_minor == 224
    return row


def _expected_writes(invoice: Invoice) -> list[tuple]:
    account, inv = invoice.account_id, invoice.id
    return [
        (
            "/v1/customers",
            f"hybatch-customer-{account}",
            {"name": "acme", "metadata[hybatch_account_id]": account},
        ),
        (
            "/v1/invoices",
            f"hybatch-invoice-{inv}",
            {
                "customer": "cus_test1",
                "currency": "usd",
                "collection_method": "charge_automatically",
                "auto_advance": "false",
                "pending_invoice_items_behavior": "exclude",
                "description": "hybatch usage 2026-03",
                "metadata[hybatch_invoice_id]": inv,
                "metadata[hybatch_period]": "2026-03",
            },
        ),
        (
            "/v1/invoiceitems",
            f"hybatch-invoice-item-{inv}-2",
            {
                "customer": "cus_test1",
                "invoice": "in_test2",
                "amount": "14",
                "currency": "usd",
                "description": "tiny-test cache_miss_input upto_256k tier 1: 200000 tokens at 0.7/1M (default@2025-01)",
                "metadata[hybatch_invoice_id]": inv,
                "metadata[hybatch_line_number]": "2",
            },
        ),
        (
            "/v1/invoiceitems",
            f"hybatch-invoice-item-{inv}-3",
            {
                "customer": "cus_test1",
                "invoice": "in_test2",
                "amount": "210",
                "currency": "usd",
                "description": "tiny-test output upto_256k tier 1: 1000000 tokens at 2.1/1M (default@2025-01)",
                "metadata[hybatch_invoice_id]": inv,
                "metadata[hybatch_line_number]": "3",
            },
        ),
        ("/v1/invoices/in_test2/finalize", f"hybatch-finalize-{inv}", {"auto_advance": "true"}),
    ]


def test_push_sends_exactly_these_requests_once(session: Session, server, client, invoice: Invoice) -> None:
    result = push_invoice(session, client, invoice.id)
    assert (result.stripe_invoice_id, result.items_created, result.finalized) == ("in_test2", 2, True)
    assert server.fake.writes() == _expected_writes(invoice)
    assert all(r.idempotency_key for r in server.fake.requests)
    assert server.fake.invoices["in_test2"]["total"] == invoice.total_minor  # the zero line was skipped
    session.refresh(invoice)
    assert invoice.stripe_invoice_id == "in_test2" and invoice.stripe_finalized_at is not None
    again = push_invoice(session, client, invoice.id)
    assert not again.finalized and len(server.fake.requests) == 5  # nothing more was sent


def test_a_failed_push_resumes_where_it_stopped(session: Session, server, client, invoice: Invoice) -> None:
    server.fake.fail_next("/v1/invoiceitems", status=400)
    with pytest.raises(stripe.InvalidRequestError):
        push_invoice(session, client, invoice.id)
    session.rollback()
    assert session.get(StripeCustomer, invoice.account_id) is not None  # kept: committed per object
    assert session.get(Invoice, invoice.id).stripe_invoice_id == "in_test2"
    push_open_invoices(lambda: session, client)  # the session factory of the beat/CLI path
    paths = [(r.path, r.idempotency_key) for r in server.fake.requests]
    expected = [(path, key) for path, key, _ in _expected_writes(invoice)]
    # customer, invoice, the failed item, then the two items and finalize: no second customer or invoice
    assert paths == expected[:3] + expected[2:]
    assert len(server.fake.customers) == 1 and len(server.fake.invoices) == 1 and len(server.fake.items) == 2


def test_lost_responses_replay_the_same_objects(session: Session, server, client, invoice: Invoice) -> None:
    push_invoice(session, client, invoice.id)
    # as if every response had been lost: our side remembers nothing, Stripe has everything
    session.execute(sa.delete(StripeInvoiceItem))
    session.execute(sa.delete(StripeCustomer))
    row = session.get(Invoice, invoice.id)
    row.stripe_invoice_id = None
    row.stripe_finalized_at = None
    session.commit()
    result = push_invoice(session, client, invoice.id)
    assert result.finalized and result.stripe_invoice_id == "in_test2"
    replays = server.fake.requests[5:]
    assert [r.idempotency_key for r in replays] == [key for _, key, _ in _expected_writes(invoice)]
    assert all(r.replayed for r in replays)
    assert len(server.fake.customers) == 1 and len(server.fake.invoices) == 1 and len(server.fake.items) == 2


def test_without_a_key_stripe_is_disabled() -> None:
    with pytest.raises(ServiceUnavailableError):
        stripe_client(BillingSettings(stripe_api_key=None))


def event_payload(event_id: str, event_type: str, stripe_invoice_id: str, **extra) -> bytes:
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": {"id": stripe_invoice_id, "object": "invoice", "metadata": extra}},
    }
    return json.dumps(body).encode()


def signed(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=timestamp)


WEBHOOK_SETTINGS = BillingSettings(stripe_webhook_secret=SECRET)


def test_webhook_events_move_the_status_once(session: Session, server, client, invoice: Invoice) -> None:
    push_invoice(session, client, invoice.id)
    failed = event_payload("evt_1", "invoice.payment_failed", "in_test2")
    assert handle_webhook(session, failed, signed(failed), WEBHOOK_SETTINGS).outcome == "applied"
    session.commit()
    assert session.get(Invoice, invoice.id).status is InvoiceStatus.PAYMENT_FAILED
    paid = event_payload("evt_2", "invoice.paid", "in_test2")
    assert handle_webhook(session, paid, signed(paid), WEBHOOK_SETTINGS).outcome == "applied"
    session.commit()
    # a replayed delivery and a late failure change nothing: paid stands
    assert handle_webhook(session, failed, signed(failed), WEBHOOK_SETTINGS).outcome == "duplicate"
    late = event_payload("evt_3", "invoice.payment_failed", "in_test2")
    assert handle_webhook(session, late, signed(late), WEBHOOK_SETTINGS).outcome == "ignored"
    other = event_payload("evt_4", "customer.created", "cus_x")
    assert handle_webhook(session, other, signed(other), WEBHOOK_SETTINGS).outcome == "ignored"
    session.commit()
    row = session.get(Invoice, invoice.id)
    assert row.status is InvoiceStatus.PAID and row.paid_at is not None and row.payment_failed_at is not None
    outcomes = dict(session.execute(sa.select(StripeEvent.id, StripeEvent.outcome)).all())
    assert outcomes == {"evt_1": "applied", "evt_2": "applied", "evt_3": "ignored", "evt_4": "ignored"}


def test_void_by_our_metadata_and_bad_signatures(session: Session, invoice: Invoice) -> None:
    voided = event_payload("evt_9", "invoice.voided", "in_unknown", hybatch_invoice_id=invoice.id)
    with pytest.raises(InvalidRequestError, match="signature"):
        handle_webhook(session, voided, signed(voided, secret="whsec_wrong"), WEBHOOK_SETTINGS)
    with pytest.raises(InvalidRequestError, match="signature"):
        stale = int(time.time()) - 301
        handle_webhook(session, voided, signed(voided, timestamp=stale), WEBHOOK_SETTINGS)
    with pytest.raises(InvalidRequestError, match="signature"):
        handle_webhook(session, voided, None, WEBHOOK_SETTINGS)
    with pytest.raises(ServiceUnavailableError):
        handle_webhook(session, voided, signed(voided), BillingSettings())
    assert handle_webhook(session, voided, signed(voided), WEBHOOK_SETTINGS).outcome == "applied"
    session.commit()
    assert session.get(Invoice, invoice.id).status is InvoiceStatus.VOID

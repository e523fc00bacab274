"""The billing HTTP API: estimate, batch cost, invoices, exports, the Stripe webhook."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import stripe
from sqlalchemy.orm import Session

from billing.invoicing.invoices import close_period
from billing.periods import Period
from billing.pricing.cost_estimate import PreviewRequest, estimate_for_account
from hybatch.batch_input import validate_batch_input
from hybatch.batch_results import record_success
from hybatch.models import Batch, BatchEndpoint, Invoice, InvoiceStatus
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.result_lines import LinePrice, TokenUsage
from tests.billing.ledger import add_usage, at
from tests.billing.test_stripe import event_payload, signed

SHARED = "zq xv jk wp " * 6


def _chat(custom_id: str, content: str, max_tokens: int = 20) -> dict:
    body = {
        "model": "tiny-test",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def _upload(api, headers, lines: list[dict]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = api.post(
        "/v1/files", headers=headers, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def test_estimate_an_uploaded_file(api, api_settings, caller, session: Session) -> None:
    headers, customer = caller("alice")
    lines = [_chat("a", SHARED + "one"), _chat("b", SHARED + "two", max_tokens=9)]
    file_id = _upload(api, headers, lines)
    response = api.post(
        "/v1/billing/estimate",
        headers=headers,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    tokenizer = PromptTokenizer.from_checkpoint(api_settings.model)
    chunks = [("".join(json.dumps(line) + "\n" for line in lines)).encode()]
    requests = validate_batch_input(
        chunks,
        endpoint=BatchEndpoint.CHAT_COMPLETIONS,
        served_model="tiny-test",
        tokenizer=tokenizer,
        max_requests=10,
    ).requests
    expected = estimate_for_account(
        session, customer.account_id, "tiny-test", [PreviewRequest.from_batch_request(r) for r in requests]
    )
    assert body == {
        **expected.as_dict(),
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "model": "tiny-test",
    }
    assert body["token_classes"]["cache_hit_input"] >= 16  # the shared prefix hits for the second line
    assert body["token_classes"]["output"] == {"min": 2, "expected": 15, "max": 29}
    assert Decimal(body["cost"]["min"]) < Decimal(body["cost"]["expected"]) < Decimal(body["cost"]["max"])


def test_an_embeddings_file_is_estimated_as_it_is_billed(api, api_settings, caller) -> None:
    headers, _ = caller("alice")
    # The same text twice: a generation batch would hit the cache on the second; embeddings never do.
    body = {"model": "tiny-test", "input": [SHARED + "one", SHARED + "one"]}
    line = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": body}
    file_id = _upload(api, headers, [line])
    response = api.post(
        "/v1/billing/estimate", headers=headers, json={"input_file_id": file_id, "endpoint": "/v1/embeddings"}
    )
    assert response.status_code == 200, response.text
    estimate = response.json()
    tokens = 2 * len(PromptTokenizer.from_checkpoint(api_settings.model).encode_completion(SHARED + "one"))
    assert estimate["token_classes"]["cache_hit_input"] == 0
    assert estimate["token_classes"]["cache_miss_input"] == tokens
    assert estimate["token_classes"]["output"] == {"min": 0, "expected": 0, "max": 0}
    # No schedule entry for tiny-test:embeddings: the default schedule's "*" cache-miss price, $0.70 / 1M.
    expected = Decimal(tokens) * Decimal("0.70") / 1_000_000
    assert {name: Decimal(cost) for name, cost in estimate["cost"].items()} == dict.fromkeys(
        ("min", "expected", "max"), expected
    )


def test_estimate_errors(api, caller) -> None:
    alice, _ = caller("alice")
    bob, _ = caller("bob")
    file_id = _upload(api, alice, [_chat("a", "hi"), {"custom_id": "b", "method": "GET"}])
    post = lambda headers, **body: api.post("/v1/billing/estimate", headers=headers, json=body)  # noqa: E731
    missing = post(alice, input_file_id="file-nope", endpoint="/v1/chat/completions")
    assert missing.status_code == 404
    assert post(bob, input_file_id=file_id, endpoint="/v1/chat/completions").status_code == 404
    bad_endpoint = post(alice, input_file_id=file_id, endpoint="/v1/no-such-endpoint")
    assert bad_endpoint.status_code == 400 and bad_endpoint.json()["error"]["param"] == "endpoint"
    invalid = post(alice, input_file_id=file_id, endpoint="/v1/chat/completions")
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_batch_input"
    assert "line 2" in invalid.json()["error"]["message"]
    assert (
        api.post("/v1/billing/estimate", json={"input_file_id": file_id, "endpoint": "x"}).status_code == 401
    )


def test_batch_cost_so_far(api, caller, session: Session) -> None:
    alice, customer = caller("alice")
    bob, _ = caller("bob")
    batch = session.get(Batch, customer.batch_id)
    line = {"id": "r", "custom_id": "c", "response": {}, "error": None}
    line["x_billing"] = {
        "token_classes": {},
        "amount": "0.000315",
        "currency": "usd",
        "price_version": "default@2025-01",
    }
    usage = TokenUsage(cache_hit_input_tokens=1, cache_miss_input_tokens=1, output_tokens=1)
    price = LinePrice(Decimal("0.000315"), "usd", "default@2025-01")
    record_success(session, batch, custom_id="c", line_number=1, line=line, usage=usage, price=price)
    session.commit()
    response = api.get(f"/v1/billing/batches/{batch.id}/cost", headers=alice)
    assert response.json() == {
        "object": "billing.batch_cost",
        "batch_id": batch.id,
        "amount": "0.000315",
        "currency": "usd",
        "priced_requests": 1,
        "unpriced_requests": 0,
    }
    assert api.get(f"/v1/billing/batches/{batch.id}/cost", headers=bob).status_code == 404


def _closed_march(session: Session, *customers) -> None:
    for index, customer in enumerate(customers):
        add_usage(
            session,
            customer,
            at("2026-03-03 10:00"),
            hit=1000,
            miss=200_000,
            out=1_000_000,
            custom_id=f"=cmd{index}",
        )
        add_usage(session, customer, at("2026-03-04 10:00"), miss=10, out=5)
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    session.commit()


def test_invoices_and_exports(api, caller, session: Session) -> None:
    alice, customer = caller("alice")
    bob, other = caller("bob")
    assert api.get("/v1/billing/exports?period=2026-03", headers=alice).status_code == 409  # not closed
    assert api.get("/v1/billing/exports?period=2026-13", headers=alice).status_code == 400
    _closed_march(session, customer, other)
    listed = api.get("/v1/billing/invoices", headers=alice).json()["data"]
    assert [(i["period"], i["total_minor"], i["total"], i["status"]) for i in listed] == [
        ("2026-03", 224, "2.24", "open")
    ]
    invoice = api.get(f"/v1/billing/invoices/{listed[0]['id']}", headers=alice).json()
    assert [line["amount_minor"] for line in invoice["lines"]] == [0, 14, 210]
    assert api.get(f"/v1/billing/invoices/{listed[0]['id']}", headers=bob).status_code == 404

    response = api.get("/v1/billing/exports?period=2026-03&format=csv", headers=alice)
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))
    lines = [row for row in rows if row["row_type"] == "line"]
    requests = [row for row in rows if row["row_type"] == "request"]
    assert {row["account"] for row in rows} == {"alice"}
    assert [(row["token_class"], row["tokens"], row["amount"], row["billed_amount"]) for row in lines] == [
        ("cache_hit_input", "1000", "0.00007", "0.00"),
        ("cache_miss_input", "200010", "0.140007", "0.14"),
        ("output", "1000005", "2.1000105", "2.10"),
    ]
    assert len(requests) == 5  # hit, miss, output of the first request; miss, output of the second
    first = requests[0]
    assert first["custom_id"] == "'=cmd0"  # a spreadsheet would run it as a formula otherwise
    assert first["date"] == "2026-03-03T10:00:00+00:00" and first["key_prefix"].startswith("hb-")
    assert first["unit_price"] == "0.07" and first["price_version"] == "default@2025-01"
    assert sum(Decimal(r["amount"]) for r in requests) == sum(Decimal(r["amount"]) for r in lines)

    as_json = api.get("/v1/billing/exports?period=2026-03&format=json", headers=alice).json()
    assert as_json["period"] == "2026-03" and len(as_json["summary"]) == 3 and len(as_json["detail"]) == 5
    assert as_json["detail"][0]["custom_id"] == "=cmd0"  # JSON keeps text as it is


def test_stripe_webhook_over_http(api, caller, session: Session) -> None:
    _, customer = caller("alice")
    _closed_march(session, customer)
    invoice = session.query(Invoice).one()
    payload = event_payload("evt_http_1", "invoice.paid", "in_x", hybatch_invoice_id=invoice.id)
    url = "/v1/billing/stripe/webhook"
    post = lambda header: api.post(url, content=payload, headers={"Stripe-Signature": header})  # noqa: E731
    wrong = post(signed(payload, secret="whsec_other"))
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_signature"
    stale = post(
        stripe.WebhookSignature.generate_signature_header(payload.decode(), "whsec_test_secret", timestamp=1)
    )
    assert stale.status_code == 400
    assert api.post(url, content=payload).status_code == 400  # no signature at all
    ok = post(signed(payload))
    assert ok.status_code == 200 and ok.json()["outcome"] == "applied"
    assert post(signed(payload)).json()["outcome"] == "duplicate"
    session.expire_all()
    assert session.get(Invoice, invoice.id).status is InvoiceStatus.PAID

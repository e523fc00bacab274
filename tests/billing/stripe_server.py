"""A local HTTP server that speaks enough of Stripe's API for the real ``stripe`` SDK.

It records every request (method, path, idempotency key, form params), honours idempotency
keys the way Stripe does (the same key replays the first response, ``Idempotent-Replayed``),
and answers customers, invoices, invoice items, finalize and credit notes in Stripe's JSON shapes. Tests can
make the next request to a path fail with ``fail_next(path, status)``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class RecordedRequest:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, str]
    replayed: bool = False


@dataclass
class FakeStripe:
    requests: list[RecordedRequest] = field(default_factory=list)
    customers: dict[str, dict] = field(default_factory=dict)
    invoices: dict[str, dict] = field(default_factory=dict)
    items: dict[str, dict] = field(default_factory=dict)
    credit_notes: dict[str, dict] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    _responses: dict[str, tuple[int, dict]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, path: str, status: int = 500) -> None:
        self.failures[path] = status

    def mark_paid(self, invoice_id: str) -> None:
        """The customer paid the invoice (as Stripe's collection would)."""
        invoice = self.invoices[invoice_id]
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)

    def writes(self) -> list[tuple[str, str | None, dict[str, str]]]:
        """(path, idempotency key, params) of every POST that was not a replay."""
        return [
            (r.path, r.idempotency_key, r.params)
            for r in self.requests
            if r.method == "POST" and not r.replayed
        ]

    def handle(
        self, method: str, path: str, key: str | None, params: dict[str, str]
    ) -> tuple[int, dict, bool]:
        with self.lock:
            if key is not None and key in self._responses:
                self.requests.append(RecordedRequest(method, path, key, params, replayed=True))
                status, body = self._responses[key]
                return status, body, True
            self.requests.append(RecordedRequest(method, path, key, params))
            if path in self.failures:
                status = self.failures.pop(path)
                return status, _error("api_error", "injected failure"), False  # errors are not stored
            status, body = self._route(method, path, params)
            if key is not None:
                self._responses[key] = (status, body)
            return status, body, False

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_test{next(self._ids)}"

    def _route(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "customers"]:
            customer = {
                "id": self._new_id("cus"),
                "object": "customer",
                "name": params.get("name"),
                "metadata": _metadata(params),
                "created": int(time.time()),
                "livemode": False,
            }
            self.customers[customer["id"]] = customer
            return 200, customer
        if method == "POST" and parts == ["v1", "invoices"]:
            invoice_id = self._new_id("in")
            invoice = {
                "id": invoice_id,
                "object": "invoice",
                "customer": params["customer"],
                "currency": params.get("currency", "usd"),
                "status": "draft",
                "auto_advance": params.get("auto_advance") == "true",
                "collection_method": params.get("collection_method"),
                "description": params.get("description"),
                "metadata": _metadata(params),
                "subtotal": 0,
                "total": 0,
                "amount_due": 0,
                "lines": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "url": f"/v1/invoices/{invoice_id}/lines",
                },
                "livemode": False,
            }
            self.invoices[invoice_id] = invoice
            return 200, invoice
        if method == "POST" and parts == ["v1", "invoiceitems"]:
            invoice = self.invoices.get(params.get("invoice", ""))
            if invoice is None or invoice["status"] != "draft":
                return 400, _error("invalid_request_error", "invoice is not a draft")
            item = {
                "id": self._new_id("ii"),
                "object": "invoiceitem",
                "amount": int(params["amount"]),
                "currency": params["currency"],
                "customer": params["customer"],
                "invoice": invoice["id"],
                "description": params.get("description"),
                "metadata": _metadata(params),
                "livemode": False,
            }
            self.items[item["id"]] = item
            invoice["lines"]["data"].append(
                {"id": item["id"], "object": "line_item", "amount": item["amount"]}
            )
            return 200, item
        if (
            method == "POST"
            and len(parts) == 4
            and parts[:2] == ["v1", "invoices"]
            and parts[3] == "finalize"
        ):
            invoice = self.invoices.get(parts[2])
            if invoice is None:
                return 404, _error("invalid_request_error", f"No such invoice: '{parts[2]}'")
            if invoice["status"] != "draft":
                return 400, _error("invalid_request_error", "This invoice is already finalized")
            total = sum(line["amount"] for line in invoice["lines"]["data"])
            invoice.update(status="open", subtotal=total, total=total, amount_due=total)
            return 200, invoice
        if method == "POST" and parts == ["v1", "credit_notes"]:
            invoice = self.invoices.get(params.get("invoice", ""))
            if invoice is None or invoice["status"] == "draft":
                return 400, _error("invalid_request_error", "a credit note needs a finalized invoice")
            lines = _indexed(params, "lines")
            total = sum(int(line["unit_amount"]) * int(line.get("quantity", "1")) for line in lines)
            credited = sum(
                note["total"] for note in self.credit_notes.values() if note["invoice"] == invoice["id"]
            )
            if total <= 0 or credited + total > invoice["total"]:
                return 400, _error(
                    "invalid_request_error", "The credit note's total is more than the invoice's"
                )
            # Stripe: on a paid invoice (post-payment) the refund, customer balance credit and outside
            # of Stripe amounts must add up to the credit note's total.
            settled = sum(int(params.get(name, "0")) for name in _POST_PAYMENT_AMOUNTS)
            if invoice["status"] == "paid" and settled != total:
                return 400, _error(
                    "invalid_request_error",
                    "For post-payment credit notes the sum of the refund, credit and outside of Stripe "
                    "amounts must equal the credit note total.",
                )
            note = {
                "id": self._new_id("cn"),
                "object": "credit_note",
                "invoice": invoice["id"],
                "currency": invoice["currency"],
                "memo": params.get("memo"),
                "total": total,
                **{name: int(params[name]) for name in _POST_PAYMENT_AMOUNTS if name in params},
                "lines": {"object": "list", "data": lines, "has_more": False},
                "metadata": _metadata(params),
                "livemode": False,
            }
            self.credit_notes[note["id"]] = note
            return 200, note
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path})")


_POST_PAYMENT_AMOUNTS = ("refund_amount", "credit_amount", "out_of_band_amount")


def _metadata(params: dict[str, str]) -> dict[str, str]:
    return {key[len("metadata[") : -1]: value for key, value in params.items() if key.startswith("metadata[")}


def _indexed(params: dict[str, str], name: str) -> list[dict[str, str]]:
    """``lines[0][unit_amount]=5`` ... -> ``[{"unit_amount": "5", ...}, ...]`` (Stripe's form encoding)."""
    rows: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if key.startswith(f"{name}["):
            index, _, field_name = key[len(name) + 1 :].partition("][")
            rows.setdefault(int(index), {})[field_name.rstrip("]")] = value
    return [rows[index] for index in sorted(rows)]


def _error(kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        path = self.path.split("?", 1)[0]
        status, payload, replayed = self.server.fake.handle(  # type: ignore[attr-defined]
            method, path, self.headers.get("Idempotency-Key"), params
        )
        encoded = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.send_header("Request-Id", f"req_{int(time.time() * 1000)}")
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        return


class StripeServer:
    """``with StripeServer() as server: server.url, server.fake``"""

    def __init__(self) -> None:
        self.fake = FakeStripe()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self.fake  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> StripeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

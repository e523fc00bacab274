"""Webhooks as OpenAI sends them: endpoints per account, batch events, Standard Webhooks signatures.

An account registers endpoints (a URL and the event types it wants; the ``whsec_`` secret is shown
once). When a batch ends, ``record_batch_event`` adds, in the same transaction as the status move,
one delivery per subscribed endpoint: the event ``{"id", "object": "event", "created_at", "type",
"data": {"id"}}`` and a message id. ``deliver`` posts it with the Standard Webhooks headers
(``webhook-id`` = the message id, the same on every retry; ``webhook-timestamp``;
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``), so the official openai SDK's
``client.webhooks.unwrap`` verifies it unchanged. Delivery is at least once: a non-2xx answer, a
timeout, a redirect or a refused connection is tried again with exponential backoff for up to
a day.

Only http(s) URLs, and none that resolve to a loopback, link-local, private or otherwise reserved
address (checked when the endpoint is created and again before every attempt, since DNS can
change; the attempt then connects to the addresses checked, and follows no redirect:
``hybatch.webhook_http``) unless ``HYBATCH_WEBHOOK_ALLOW_PRIVATE`` is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.errors import InvalidRequestError, NotFoundError
from hybatch.ids import new_id
from hybatch.models import Batch, BatchStatus, WebhookDelivery, WebhookEndpoint, utc_now
from hybatch.pagination import Page, paginate
from hybatch.webhook_http import Attempt, post

BATCH_EVENTS = {
    BatchStatus.COMPLETED: "batch.completed",
    BatchStatus.FAILED: "batch.failed",
    BatchStatus.EXPIRED: "batch.expired",
    BatchStatus.CANCELLED: "batch.cancelled",
}
EVENT_TYPES = tuple(BATCH_EVENTS.values())
# Account events of billing (billing.alerts); an endpoint gets them only when it asks for them.
BILLING_EVENT_TYPES = ("credits.low_balance", "credits.depleted", "spend_limit.soft_reached")
SECRET_PREFIX = "whsec_"
ATTEMPT_TIMEOUT_S = 10.0
FIRST_RETRY_S = 5.0  # then 10, 20, 40 s ... capped at an hour, for up to a day
MAX_RETRY_S = 3600.0
GIVE_UP_AFTER = timedelta(days=1)
DUE_PER_SWEEP = 100
# A sweep starts no attempt after this long: the thread that sends webhooks also sweeps leases,
# and endpoints that time out one after another must not hold that up for minutes.
SWEEP_BUDGET_S = 5.0


# -- endpoints --------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_hint(secret: str) -> str:
    return f"{secret[: len(SECRET_PREFIX) + 4]}...{secret[-4:]}"


def check_url(url: str, *, allow_private: bool, resolve: Callable[[str], Iterable[str]] | None = None) -> str:
    """``url`` itself if webhooks may be sent there; raises InvalidRequestError otherwise."""
    public_addresses(url, allow_private=allow_private, resolve=resolve)
    return url


def public_addresses(
    url: str, *, allow_private: bool, resolve: Callable[[str], Iterable[str]] | None = None
) -> tuple[str, ...] | None:
    """The addresses ``url``'s host resolves to, every one of them public, for the attempt to
    connect to (None when the operator allows any address: nothing is checked or pinned); raises
    InvalidRequestError for a URL that is not http(s), a host that does not resolve, or any
    loopback, link-local, private or reserved address among them."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number from 0 to 65535)
    except ValueError as error:  # "http://[::1" and the like
        raise InvalidRequestError(
            f"Invalid webhook URL: {error}.", param="url", code="invalid_url"
        ) from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            "A webhook URL must be an http(s) URL with a host.", param="url", code="invalid_url"
        )
    if allow_private:
        return None
    addresses = tuple((resolve or _resolve)(parts.hostname))
    if not addresses:
        raise InvalidRequestError(
            f"The host {parts.hostname!r} does not resolve.", param="url", code="invalid_url"
        )
    for address in addresses:
        if not _is_public(ipaddress.ip_address(address)):
            raise InvalidRequestError(
                f"The host {parts.hostname!r} resolves to {address}, a loopback, link-local or private "
                "address: webhooks are sent to public addresses only (an operator may allow others "
                "with HYBATCH_WEBHOOK_ALLOW_PRIVATE).",
                param="url",
                code="invalid_url",
            )
    return addresses


NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: IPv4 behind a NAT64 gateway


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast, and so is any IPv4 address an IPv6 one carries (6to4, Teredo, NAT64), since
    a gateway would forward to that one."""
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _is_public(embedded)
    return True


def _resolve(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (socket.gaierror, UnicodeError):  # UnicodeError: not a host name ("ex..com", a label over 63)
        return []


def create_endpoint(
    session: Session,
    account_id: str,
    *,
    url: str,
    event_types: Iterable[str] | None,
    name: str | None,
    allow_private: bool,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint (all batch events when ``event_types`` is None); commits. Returns the row
    and its secret, which is not shown again."""
    events = list(EVENT_TYPES if event_types is None else event_types)
    supported = EVENT_TYPES + BILLING_EVENT_TYPES
    unknown = sorted(set(events) - set(supported))
    if unknown or not events:
        raise InvalidRequestError(
            f"Unsupported event types {unknown or events}; supported: {', '.join(supported)}.",
            param="event_types",
            code="invalid_value",
        )
    _check_lengths(url, name)
    check_url(url, allow_private=allow_private)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=new_id("we_"),
        account_id=account_id,
        name=name or _shortened(url, MAX_NAME_LENGTH),
        url=url,
        event_types=sorted(set(events), key=supported.index),
        secret=secret,
        created_at=utc_now(),
    )
    session.add(endpoint)
    session.commit()
    return endpoint, secret


MAX_URL_LENGTH = WebhookEndpoint.__table__.c.url.type.length
MAX_NAME_LENGTH = WebhookEndpoint.__table__.c.name.type.length


def _check_lengths(url: str, name: str | None) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(
            f"A webhook URL may be at most {MAX_URL_LENGTH} characters; this one has {len(url)}.",
            param="url",
            code="invalid_url",
        )
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise InvalidRequestError(
            f"A webhook endpoint's name may be at most {MAX_NAME_LENGTH} characters; this one has {len(name)}.",
            param="name",
            code="invalid_value",
        )


def _shortened(text: str, max_length: int) -> str:
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


def _live_endpoints(account_id: str) -> sa.Select[tuple[WebhookEndpoint]]:
    return sa.select(WebhookEndpoint).where(
        WebhookEndpoint.account_id == account_id, WebhookEndpoint.deleted_at.is_(None)
    )


def list_endpoints(
    session: Session, account_id: str, *, after: str | None, limit: int
) -> Page[WebhookEndpoint]:
    return paginate(session, _live_endpoints(account_id), WebhookEndpoint, after=after, limit=limit)


def get_endpoint(session: Session, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.scalar(_live_endpoints(account_id).where(WebhookEndpoint.id == endpoint_id))
    if endpoint is None:
        raise NotFoundError(f"No such webhook endpoint: {endpoint_id}", param="id")
    return endpoint


def delete_endpoint(session: Session, account_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Stop sending to the endpoint (its pending deliveries are dropped); commits."""
    endpoint = get_endpoint(session, account_id, endpoint_id)
    endpoint.deleted_at = utc_now()
    session.commit()
    return endpoint


# -- events -----------------------------------------------------------------------------------


def record_batch_event(session: Session, batch_id: str, status: BatchStatus) -> int:
    """One delivery per live endpoint of the batch's account subscribed to the event of ``status``
    (none for a status that is not an ending); does not commit. Returns how many."""
    event_type = BATCH_EVENTS.get(status)
    if event_type is None:
        return 0
    account_id = session.scalar(sa.select(Batch.account_id).where(Batch.id == batch_id))
    return record_account_event(session, account_id, event_type, {"id": batch_id}) if account_id else 0


def record_account_event(session: Session, account_id: str, event_type: str, data: dict[str, Any]) -> int:
    """One delivery of the event ``{"type": event_type, "data": data}`` per live endpoint of the
    account subscribed to it; does not commit. Returns how many."""
    endpoints = session.scalars(_live_endpoints(account_id)).all()
    subscribed = [endpoint for endpoint in endpoints if event_type in endpoint.event_types]
    if not subscribed:
        return 0
    now = utc_now()
    event = {
        "id": new_id("evt_"),
        "object": "event",
        "created_at": int(now.timestamp()),
        "type": event_type,
        "data": data,
    }
    for endpoint in subscribed:
        session.add(
            WebhookDelivery(
                id=new_id("msg_"),
                endpoint_id=endpoint.id,
                event_type=event_type,
                payload=event,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(subscribed)


# -- delivery ---------------------------------------------------------------------------------


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value of one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def retry_delay(attempts: int) -> timedelta:
    """How long after its ``attempts``-th failure a delivery is tried again (5 s, 10 s, 20 s, ...)."""
    return timedelta(seconds=min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** (attempts - 1)))


def claim_due(session: Session, now: datetime | None = None, *, limit: int = DUE_PER_SWEEP) -> list[str]:
    """Up to ``limit`` deliveries due now, each claimed (its next attempt pushed past the attempt's
    timeout, so no other sweeper takes it meanwhile); commits. The caller delivers them at once:
    a claim outlives one attempt, not a queue of them."""
    now = now or utc_now()
    due = session.scalars(
        sa.select(WebhookDelivery.id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.gave_up_at.is_(None),
            WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.deleted_at.is_(None),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    ).all()
    claimed = []
    for delivery_id in due:
        taken = session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.next_attempt_at <= now)
            .values(next_attempt_at=now + timedelta(seconds=2 * ATTEMPT_TIMEOUT_S))
        )
        if taken.rowcount == 1:
            claimed.append(delivery_id)
    session.commit()
    return claimed


def deliver(
    session: Session,
    delivery_id: str,
    *,
    allow_private: bool,
    send: Callable[[str, bytes, dict[str, str], float, Sequence[str] | None], Attempt] = post,
    resolve: Callable[[str], Iterable[str]] | None = None,
) -> Attempt | None:
    """One attempt at a claimed delivery, and what follows from it (delivered, retried later, or
    given up after a day); commits. None, and nothing sent, when it was delivered or given up
    meanwhile (a claim taken over from a sweeper slower than the claim)."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery.delivered_at is not None or delivery.gave_up_at is not None:
        return None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(utc_now().timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": "hybatch-webhooks",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(endpoint.secret, delivery.id, timestamp, body),
    }
    try:
        # Checked again (DNS may point elsewhere now), and the attempt connects to the addresses
        # checked, not to what the host resolves to a moment later.
        addresses = public_addresses(endpoint.url, allow_private=allow_private, resolve=resolve)
        attempt = send(endpoint.url, body, headers, ATTEMPT_TIMEOUT_S, addresses)
    except InvalidRequestError as refused:
        attempt = Attempt(None, refused.message)
    now = utc_now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = attempt.status_code
    delivery.last_error = None if attempt.succeeded else (attempt.error or "")[:500]
    if attempt.succeeded:
        delivery.delivered_at = now
    elif now - delivery.created_at >= GIVE_UP_AFTER:
        delivery.gave_up_at = now
    else:
        delivery.next_attempt_at = now + retry_delay(delivery.attempts)
    session.commit()
    return attempt


def deliver_due(
    session_factory,
    *,
    allow_private: bool,
    send: Callable[[str, bytes, dict[str, str], float, Sequence[str] | None], Attempt] = post,
    budget_s: float = SWEEP_BUDGET_S,
) -> int:
    """Attempt deliveries due now, each once, up to ``DUE_PER_SWEEP`` of them and starting none
    after ``budget_s`` seconds (the rest wait for the next sweep, here or in another worker);
    returns how many were attempted. Each is claimed just before its attempt: claiming them all
    first would let the later claims lapse while slow endpoints hold the earlier attempts, and
    other sweepers would send those deliveries a second time."""
    deadline = time.monotonic() + budget_s
    attempted = 0
    while attempted < DUE_PER_SWEEP and (attempted == 0 or time.monotonic() < deadline):
        with session_factory() as session:
            claimed = claim_due(session, limit=1)
            if not claimed:
                break
            deliver(session, claimed[0], allow_private=allow_private, send=send)
        attempted += 1
    return attempted


def recent_deliveries(session: Session, endpoint_id: str, limit: int = 10) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first (the dashboard shows them)."""
    return list(
        session.scalars(
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.created_at.desc())
            .limit(limit)
        )
    )

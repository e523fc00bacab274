"""Webhooks: URL rules, batch events recorded with the move that ends a batch, Standard Webhooks
signatures the official openai SDK verifies, at-least-once delivery with backoff for up to a day."""

from __future__ import annotations

import time
from datetime import timedelta

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch import webhooks
from hybatch.batch_lifecycle import UNFINISHED, move_batch
from hybatch.errors import InvalidRequestError
from hybatch.models import BatchStatus, WebhookDelivery, utc_now
from tests.hybatch.batch_rows import add_batch


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http:///no-host",
        "http://127.0.0.1/hook",
        "http://localhost:9000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "http://[::1/hook",  # not a URL at all
        "http://hooks.example:99999/hook",  # no such port
        "http://hooks.example:port/hook",
    ],
)
def test_only_public_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        webhooks.check_url(
            url, allow_private=False, resolve=lambda host: webhooks._resolve(host) or ["127.0.0.1"]
        )


@pytest.mark.parametrize("url", ["http://[::1/hook", "http://127.0.0.1:99999/hook"])
def test_a_malformed_url_is_refused_even_where_private_ones_are_allowed(url: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        webhooks.check_url(url, allow_private=True)
    assert (refused.value.param, refused.value.code) == ("url", "invalid_url")


@pytest.mark.parametrize("host", ["ex..com", "a" * 64 + ".example"])
def test_a_host_that_is_not_a_name_does_not_resolve(host: str) -> None:
    with pytest.raises(InvalidRequestError, match="does not resolve"):
        webhooks.check_url(f"https://{host}/hook", allow_private=False)


def test_a_public_url_is_accepted_and_private_ones_when_the_operator_allows() -> None:
    assert webhooks.check_url(
        "https://hooks.example/x", allow_private=False, resolve=lambda host: ["93.184.216.34"]
    )
    assert webhooks.check_url("http://127.0.0.1:9/x", allow_private=True)


def _endpoint(session: Session, account_id: str, url: str, events=None):
    return webhooks.create_endpoint(
        session, account_id, url=url, event_types=events, name=None, allow_private=True
    )


def test_an_ending_records_one_delivery_per_subscribed_endpoint_in_its_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        batch = add_batch(session)
        everything, _ = _endpoint(session, batch.account_id, "http://127.0.0.1:9/all")
        _endpoint(session, batch.account_id, "http://127.0.0.1:9/failures", ["batch.failed"])
        assert move_batch(session, batch.id, BatchStatus.IN_PROGRESS, from_statuses=UNFINISHED)
        assert move_batch(session, batch.id, BatchStatus.CANCELLED, from_statuses=UNFINISHED)
        session.rollback()  # a move that is rolled back sends nothing
        assert session.scalars(sa.select(WebhookDelivery)).all() == []
        assert move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()
        [delivery] = session.scalars(sa.select(WebhookDelivery)).all()
        assert delivery.endpoint_id == everything.id and delivery.event_type == "batch.completed"
        assert delivery.payload["type"] == "batch.completed" and delivery.payload["data"] == {"id": batch.id}
        assert delivery.payload["object"] == "event" and delivery.payload["id"].startswith("evt_")


def test_deliveries_are_signed_for_the_openai_sdk_and_retried_with_the_same_id(
    session_factory: sessionmaker[Session], webhook_receiver
) -> None:
    url = f"http://127.0.0.1:{webhook_receiver.server_address[1]}/hook"
    webhook_receiver.statuses = [500]  # the first attempt fails
    with session_factory() as session:
        batch = add_batch(session)
        _, secret = _endpoint(session, batch.account_id, url)
        move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()

    assert webhooks.deliver_due(session_factory, allow_private=True) == 1
    with session_factory() as session:
        [delivery] = session.scalars(sa.select(WebhookDelivery)).all()
        assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at) == (1, 500, None)
        assert delivery.next_attempt_at > utc_now()  # backoff: not due again yet
    assert webhooks.deliver_due(session_factory, allow_private=True) == 0
    with session_factory() as session:
        session.execute(sa.update(WebhookDelivery).values(next_attempt_at=utc_now()))
        session.commit()
    assert webhooks.deliver_due(session_factory, allow_private=True) == 1

    (first_headers, first_body), (headers, body) = webhook_receiver.received
    assert first_headers["webhook-id"] == headers["webhook-id"]  # at least once, one id
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(body, headers, secret=secret)
    assert (event.type, event.data.id) == ("batch.completed", batch.id)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="unused").webhooks.unwrap(body + b" ", headers, secret=secret)
    with session_factory() as session:
        [delivery] = session.scalars(sa.select(WebhookDelivery)).all()
        assert delivery.delivered_at is not None and delivery.attempts == 2


def test_retries_back_off_and_give_up_after_a_day(session_factory: sessionmaker[Session]) -> None:
    assert [webhooks.retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert webhooks.retry_delay(30) == timedelta(hours=1)  # capped
    with session_factory() as session:
        batch = add_batch(session)
        _endpoint(session, batch.account_id, "http://127.0.0.1:9/down")
        move_batch(session, batch.id, BatchStatus.FAILED, from_statuses=UNFINISHED)
        session.execute(
            sa.update(WebhookDelivery).values(created_at=utc_now() - timedelta(days=1, seconds=1))
        )
        session.commit()
        [delivery_id] = webhooks.claim_due(session)
        attempt = webhooks.deliver(
            session, delivery_id, allow_private=True, send=lambda *_args: webhooks.Attempt(None, "refused")
        )
        assert not attempt.succeeded
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery.gave_up_at is not None and delivery.last_error == "refused"
        assert webhooks.claim_due(session) == []


def test_a_url_that_now_resolves_privately_is_not_sent_to(session_factory: sessionmaker[Session]) -> None:
    sent = []
    with session_factory() as session:
        batch = add_batch(session)
        _endpoint(session, batch.account_id, "http://127.0.0.1:9/x")
        move_batch(session, batch.id, BatchStatus.EXPIRED, from_statuses=UNFINISHED)
        session.commit()
        [delivery_id] = webhooks.claim_due(session)
        attempt = webhooks.deliver(
            session, delivery_id, allow_private=False, send=lambda *args: sent.append(args)
        )
    assert sent == [] and not attempt.succeeded and "private" in attempt.error


def test_an_attempt_connects_to_the_addresses_just_checked(session_factory: sessionmaker[Session]) -> None:
    sent = []
    with session_factory() as session:
        batch = add_batch(session)
        _endpoint(session, batch.account_id, "https://hooks.example/x")
        move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()
        [delivery_id] = webhooks.claim_due(session)
        attempt = webhooks.deliver(
            session,
            delivery_id,
            allow_private=False,
            send=lambda *args: sent.append(args) or webhooks.Attempt(204),
            resolve=lambda host: ["93.184.216.34"],
        )
    assert attempt.succeeded
    [(url, _body, headers, timeout_s, addresses)] = sent
    assert url == "https://hooks.example/x" and headers["webhook-id"] == delivery_id
    assert timeout_s == webhooks.ATTEMPT_TIMEOUT_S  # a timeout on every attempt
    assert addresses == ("93.184.216.34",)  # pinned: no second lookup a rebinding DNS could answer


def test_each_delivery_is_claimed_just_before_its_attempt(session_factory: sessionmaker[Session]) -> None:
    """A claim outlives one attempt: claiming a sweep's worth first would let later claims lapse
    behind slow endpoints, and another sweeper would send those deliveries again."""
    with session_factory() as session:
        for i in range(3):
            batch = add_batch(session, account_name=f"acme{i}")
            _endpoint(session, batch.account_id, "http://127.0.0.1:9/x")
            move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()
    unclaimed_during_attempts = []

    def send(url, body, headers, timeout_s, addresses):
        with session_factory() as session:
            due = session.scalar(
                sa.select(sa.func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.attempts == 0, WebhookDelivery.next_attempt_at <= utc_now())
            )
        unclaimed_during_attempts.append(due)
        return webhooks.Attempt(200)

    assert webhooks.deliver_due(session_factory, allow_private=True, send=send) == 3
    assert unclaimed_during_attempts == [2, 1, 0]  # the others still due while one is sent
    with session_factory() as session:
        assert all(d.delivered_at for d in session.scalars(sa.select(WebhookDelivery)))
    assert webhooks.deliver_due(session_factory, allow_private=True, send=send) == 0


def test_a_delivery_finished_meanwhile_is_not_sent_again(session_factory: sessionmaker[Session]) -> None:
    sent = []
    with session_factory() as session:
        batch = add_batch(session)
        _endpoint(session, batch.account_id, "http://127.0.0.1:9/x")
        move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()
        [delivery_id] = webhooks.claim_due(session)
        session.execute(sa.update(WebhookDelivery).values(delivered_at=utc_now(), attempts=1))
        session.commit()
        assert (
            webhooks.deliver(session, delivery_id, allow_private=True, send=lambda *a: sent.append(a)) is None
        )
        assert sent == [] and session.get(WebhookDelivery, delivery_id).attempts == 1


def test_a_sweep_starts_no_attempt_after_its_budget(session_factory: sessionmaker[Session]) -> None:
    """The sweeper thread that sends webhooks also sweeps leases: endpoints that answer slowly one
    after another must not hold that up."""
    with session_factory() as session:
        for i in range(4):
            batch = add_batch(session, account_name=f"slow{i}")
            _endpoint(session, batch.account_id, "http://127.0.0.1:9/slow")
            move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()

    def slow(*_args) -> webhooks.Attempt:
        time.sleep(0.2)
        return webhooks.Attempt(200)

    assert webhooks.deliver_due(session_factory, allow_private=True, send=slow, budget_s=0.3) == 2
    assert (
        webhooks.deliver_due(session_factory, allow_private=True, send=slow, budget_s=0.0) == 1
    )  # one at least
    assert webhooks.deliver_due(session_factory, allow_private=True, send=slow) == 1  # the rest, next sweep
    with session_factory() as session:
        assert all(d.delivered_at for d in session.scalars(sa.select(WebhookDelivery)))


def test_a_deleted_endpoint_gets_nothing_more(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        batch = add_batch(session)
        endpoint, _ = _endpoint(session, batch.account_id, "http://127.0.0.1:9/x")
        move_batch(session, batch.id, BatchStatus.COMPLETED, from_statuses=UNFINISHED)
        session.commit()
        webhooks.delete_endpoint(session, batch.account_id, endpoint.id)
        assert webhooks.claim_due(session) == []  # its pending delivery is dropped
        other = add_batch(session, account_name="other")
        assert webhooks.record_batch_event(session, other.id, BatchStatus.FAILED) == 0
        assert webhooks.record_account_event(session, batch.account_id, "batch.failed", {"id": "x"}) == 0

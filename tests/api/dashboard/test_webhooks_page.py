"""The dashboard's webhooks page: the viewer's endpoints and each one's latest delivery attempts."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hybatch import webhooks
from hybatch.batch_lifecycle import UNFINISHED, move_batch
from hybatch.db import make_engine, make_session_factory
from hybatch.models import BatchStatus, WebhookDelivery, utc_now
from tests.api.dashboard.world import World


def test_endpoints_and_their_attempts_are_shown_to_their_account_only(
    sign_in: Callable[[str], TestClient], world: World, settings
) -> None:
    alice = sign_in(world.alice_secret)
    assert "No webhook endpoints" in alice.get("/dashboard/webhooks").text
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        endpoint, _secret = webhooks.create_endpoint(
            session,
            world.alice_account_id,
            url="https://hooks.example/alice",
            event_types=None,
            name="ci",
            allow_private=True,
        )
        move_batch(session, world.alice_running_batch_id, BatchStatus.CANCELLED, from_statuses=UNFINISHED)
        session.commit()
        session.execute(
            sa.update(WebhookDelivery).values(
                attempts=3, last_attempt_at=utc_now(), last_status_code=503, last_error="HTTP 503"
            )
        )
        session.commit()
    engine.dispose()

    page = alice.get("/dashboard/webhooks").text
    section = page[page.index(f'id="endpoint-{endpoint.id}"') :]
    assert "https://hooks.example/alice" in section and "batch.cancelled" in section
    assert world.alice_running_batch_id in section and "retrying" in section and "HTTP 503" in section
    assert 'aria-current="page">Webhooks' in page
    bob_page = sign_in(world.bob_secret).get("/dashboard/webhooks").text
    assert "hooks.example/alice" not in bob_page and "No webhook endpoints" in bob_page


def test_an_account_event_is_shown_by_its_message_not_linked_as_a_batch(
    sign_in: Callable[[str], TestClient], world: World, settings
) -> None:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        endpoint, _secret = webhooks.create_endpoint(
            session,
            world.alice_account_id,
            url="https://hooks.example/alice",
            event_types=["batch.completed", "credits.low_balance"],
            name="billing",
            allow_private=True,
        )
        webhooks.record_account_event(
            session,
            world.alice_account_id,
            "credits.low_balance",
            {"id": "alert_123", "message": "Prepaid credit is running low."},
        )
        session.commit()
    engine.dispose()

    page = sign_in(world.alice_secret).get("/dashboard/webhooks").text
    section = page[page.index(f'id="endpoint-{endpoint.id}"') :]
    assert "credits.low_balance" in section and "Prepaid credit is running low." in section
    assert "/dashboard/batches/alert_123" not in section  # an alert is not a batch

"""The worker's sweeper thread sends due webhooks within a second or two, not at the next lease sweep."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hybatch import webhooks
from hybatch.batch_lifecycle import UNFINISHED, move_batch
from hybatch.models import BatchStatus, WebhookDelivery
from hybatch.settings import Settings
from tests.hybatch.batch_rows import add_batch
from worker.sweeper import SweeperThread


class NoTasks:
    def run_batch(self, batch_id: str) -> None:
        raise AssertionError("nothing is stale here")

    def run_shard(self, batch_id: str, shard_index: int, queue: str | None = None) -> None:
        raise AssertionError("nothing is stale here")


def test_the_sweeper_thread_sends_a_due_webhook(
    session_factory: sessionmaker[Session], webhook_receiver, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{webhook_receiver.server_address[1]}/hook"
    with session_factory() as session:
        batch = add_batch(session)
        webhooks.create_endpoint(
            session, batch.account_id, url=url, event_types=None, name=None, allow_private=True
        )
        move_batch(session, batch.id, BatchStatus.CANCELLED, from_statuses=UNFINISHED)
        session.commit()
    settings = Settings(data_dir=tmp_path, lease_s=600, webhook_allow_private=True)
    thread = SweeperThread(
        session_factory, NoTasks(), settings, interval_s=300
    )  # no lease sweep in this test
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not webhook_receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
        thread.join(timeout=5)
    [(headers, _body)] = webhook_receiver.received
    with session_factory() as session:
        delivery = session.scalars(sa.select(WebhookDelivery)).one()
        assert headers["webhook-id"] == delivery.id and delivery.delivered_at is not None

"""An embedded worker starting up takes back the batches a killed worker left behind."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from hybatch.batch_lifecycle import claim_batch, move_batch
from hybatch.models import Batch, BatchStatus
from tests.worker.jobs.batches import chat_lines, submit
from worker import jobs, recovery


def test_claimed_unfinished_batches_are_found(context: jobs.JobContext) -> None:
    waiting = submit(context, chat_lines(1), account="waiting")  # still queued: its message is live
    claimed = submit(context, chat_lines(1), account="claimed")
    running = submit(context, chat_lines(1), account="running")
    finished = submit(context, chat_lines(1), account="finished")
    with context.session_factory() as session:
        for batch_id in (claimed, running, finished):
            claim_batch(session, batch_id)
        move_batch(session, running, BatchStatus.IN_PROGRESS, from_statuses=(BatchStatus.VALIDATING,))
        move_batch(session, finished, BatchStatus.FAILED, from_statuses=(BatchStatus.VALIDATING,))
        session.commit()
        assert recovery.claimed_unfinished_batch_ids(session) == [claimed, running]
        assert session.scalar(sa.select(Batch.status).where(Batch.id == waiting)) is BatchStatus.VALIDATING


@pytest.mark.parametrize("broker_url", ["sqla+sqlite:///x.db", "redis://127.0.0.1:1/0"])
def test_only_an_embedded_worker_takes_batches_back(
    tasks, context: jobs.JobContext, monkeypatch: pytest.MonkeyPatch, broker_url: str
) -> None:
    settings = context.settings.model_copy(update={"broker_url": broker_url})
    monkeypatch.setattr(tasks, "worker_context", lambda: dataclasses.replace(context, settings=settings))
    published = []
    monkeypatch.setattr(tasks.run_batch, "apply_async", lambda args, queue: published.append((args, queue)))
    batch_id = submit(context, chat_lines(1))
    with context.session_factory() as session:
        claim_batch(session, batch_id)

    taken = tasks.take_back_orphaned_batches()

    expected = [batch_id] if broker_url.startswith("sqla+") else []
    assert taken == expected
    assert published == [([b], settings.task_queue) for b in expected]

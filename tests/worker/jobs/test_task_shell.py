"""The Celery side: app settings, and the task as a thin shell over jobs.run_batch."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.exceptions import Ignore

from hybatch.models import BatchShard, BatchStatus, ShardStatus
from hybatch.settings import Settings
from hybatch.tasks import RUN_BATCH_TASK, RUN_SHARD_TASK, SWEEP_TASK
from tests.worker.jobs.batches import chat_lines, read_outcome, submit
from tests.worker.jobs.task_queue import FakeConsumer
from worker import jobs, shard_job


def test_app_runs_one_task_at_a_time(tasks, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", task_queue="q-test")
    conf = importlib.import_module("worker.celery_app").create_celery_app(settings).conf
    assert conf.broker_url == f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}"
    assert conf.task_default_queue == "q-test"
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_pool == "solo"
    assert not conf.broker_transport_options  # kombu's SQLAlchemy transport takes engine options only
    assert (tmp_path / "var").is_dir()


def test_batch_and_shard_tasks_are_acknowledged_when_taken_leases_decide_recovery(
    tasks, tmp_path: Path
) -> None:
    # Not the broker's visibility timeout (a day on Redis): a dead worker's shard must run again
    # within two leases, which only the sweepers can do.
    assert tasks.run_batch.acks_late is False and tasks.run_shard.acks_late is False
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", lease_s=20)
    conf = importlib.import_module("worker.celery_app").create_celery_app(settings).conf
    # Redis's redelivery of a dead worker's message is an extra copy that the lease turns away,
    # not the recovery (the sweepers'), so it need not wait for the longest completion window.
    assert conf.broker_transport_options == {"visibility_timeout": 3600}
    assert conf.beat_schedule["worker-sweep"]["task"] == SWEEP_TASK
    assert conf.beat_schedule["worker-sweep"]["schedule"].total_seconds() == 20


def test_tasks_are_registered_by_the_names_sent(tasks) -> None:
    assert tasks.run_batch.name == RUN_BATCH_TASK
    assert tasks.run_shard.name == RUN_SHARD_TASK
    assert {RUN_BATCH_TASK, RUN_SHARD_TASK, SWEEP_TASK} <= set(tasks.app.tasks)


def test_the_batch_task_plans_and_the_shard_tasks_finish(tasks, context: jobs.JobContext) -> None:
    batch_id = submit(context, chat_lines(2))
    assert tasks.run_batch(batch_id) == "in_progress"
    [shard_task] = context.send.tasks
    assert shard_task == ("shard", batch_id, 0)
    context.send.tasks.clear()
    assert tasks.run_shard(batch_id, 0) == "completed"  # the last shard finalizes
    assert tasks.run_batch(batch_id) == "completed"
    assert tasks.run_batch("batch_unknown") is None


def test_a_shutdown_stops_consuming_then_puts_the_batch_back(
    tasks, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    task_consumer = FakeConsumer()
    monkeypatch.setattr(tasks._TaskConsumer, "consumer", None)  # put back after the test
    tasks.keep_task_consumer(sender=SimpleNamespace(task_consumer=task_consumer))
    published = []

    def interrupted(batch_id, shard_index, context):
        raise jobs.JobInterrupted(batch_id, finished_requests=37, total_requests=100, shard_index=shard_index)

    class Sender:
        def run_shard(self, batch_id, shard_index, queue=None):
            assert queue is None, "a put-back goes to the shared queue"
            assert task_consumer.cancelled, "published while still consuming: this worker would take it back"
            published.append((batch_id, shard_index))

    monkeypatch.setattr(shard_job, "run_shard", interrupted)
    context = tasks.worker_context()
    monkeypatch.setattr(tasks, "worker_context", lambda: dataclasses.replace(context, send=Sender()))
    with pytest.raises(Ignore):  # acknowledged without a result: no Reject, so no traceback in the log
        tasks.run_shard("batch_x", 3)
    assert published == [("batch_x", 3)]
    [record] = [r for r in caplog.records if "batch_x" in r.getMessage()]
    assert record.getMessage() == (
        "the worker is stopping: batch batch_x put back on the queue at 37/100; it resumes on the next start"
    )
    assert record.exc_info is None


def test_when_retries_run_out_the_batch_fails(tasks, context, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_id = submit(context, chat_lines(2))

    def broken(batch_id, context):
        raise RuntimeError("no GPU")

    monkeypatch.setattr(jobs, "run_batch", broken)
    result = tasks.run_batch.apply(args=[batch_id], retries=tasks.MAX_RETRIES)
    assert isinstance(result.result, RuntimeError)
    outcome = read_outcome(context, batch_id)
    assert outcome.batch.status is BatchStatus.FAILED
    assert "no GPU" in outcome.batch.errors[0]["message"]
    assert {line["error"]["code"] for line in outcome.error_lines} == {"batch_failed"}


def test_a_worker_that_cannot_load_its_engine_hands_the_shard_over_and_stops(
    tasks, context: jobs.JobContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from celery.worker import state as worker_state

    batch_id = submit(context, chat_lines(2))
    assert tasks.run_batch(batch_id) == "in_progress"
    context.send.tasks.clear()

    def no_engine():
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(worker_state, "should_stop", None)
    monkeypatch.setattr(tasks, "worker_context", lambda: dataclasses.replace(context, load_llm=no_engine))
    with pytest.raises(Ignore):  # not retried: three retries here would fail a batch others can run
        tasks.run_shard(batch_id, 0)

    assert list(context.send.tasks) == [("shard", batch_id, 0)]  # back on the queue for the others
    assert worker_state.should_stop == tasks.EXIT_NO_ENGINE  # this worker exits after the task
    assert "cannot load its engine (RuntimeError: CUDA out of memory)" in caplog.text
    outcome = read_outcome(context, batch_id)
    assert outcome.batch.status is BatchStatus.IN_PROGRESS and outcome.results == []
    with context.session_factory() as session:
        shard = session.get(BatchShard, (batch_id, 0))
        assert (shard.status, shard.lease_owner, shard.attempts) == (ShardStatus.PENDING, None, 0)

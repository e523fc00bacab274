"""The Celery side: app settings, and the task as a thin shell over jobs.run_batch."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery.exceptions import Ignore

from hybatch.models import BatchStatus
from hybatch.settings import Settings
from hybatch.tasks import RUN_BATCH_TASK
from tests.worker.jobs.batches import chat_lines, read_outcome, submit
from worker import jobs


def test_app_runs_one_task_at_a_time_and_acks_late(tasks, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", task_queue="q-test")
    conf = importlib.import_module("worker.celery_app").create_celery_app(settings).conf
    assert conf.broker_url == f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}"
    assert conf.task_default_queue == "q-test"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_pool == "solo"
    assert not conf.broker_transport_options  # kombu's SQLAlchemy transport takes engine options only
    assert (tmp_path / "var").is_dir()


def test_redis_never_hands_a_running_batch_to_another_worker_early(tasks, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", completion_windows=("24h", "1h")
    )
    conf = importlib.import_module("worker.celery_app").create_celery_app(settings).conf
    assert conf.broker_transport_options == {"visibility_timeout": 24 * 3600}


def test_task_is_registered_by_the_name_the_api_sends(tasks) -> None:
    assert tasks.run_batch.name == RUN_BATCH_TASK
    assert RUN_BATCH_TASK in tasks.app.tasks


def test_task_runs_the_job(tasks, context: jobs.JobContext) -> None:
    batch_id = submit(context, chat_lines(2))
    assert tasks.run_batch(batch_id) == "completed"
    assert tasks.run_batch("batch_unknown") is None


class _TaskConsumer:
    """Stands in for kombu's consumer of the worker's queue."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_a_shutdown_stops_consuming_then_puts_the_batch_back(
    tasks, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    task_consumer = _TaskConsumer()
    monkeypatch.setattr(tasks._TaskConsumer, "consumer", None)  # put back after the test
    tasks.keep_task_consumer(sender=SimpleNamespace(task_consumer=task_consumer))
    published = []

    def interrupted(batch_id, context):
        raise jobs.JobInterrupted(batch_id, finished_requests=37, total_requests=100)

    def publish(args, queue):
        assert task_consumer.cancelled, "published while still consuming: this worker would take it back"
        published.append((args, queue))

    monkeypatch.setattr(jobs, "run_batch", interrupted)
    monkeypatch.setattr(tasks.run_batch, "apply_async", publish)
    with pytest.raises(Ignore):  # acknowledged without a result: no Reject, so no traceback in the log
        tasks.run_batch("batch_x")
    assert published == [(["batch_x"], tasks.worker_context().settings.task_queue)]
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

"""The Celery side: app settings, and the task as a thin shell over jobs.run_batch."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from celery.exceptions import Reject

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


def test_a_shutdown_puts_the_message_back(tasks, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(batch_id, context):
        raise jobs.JobInterrupted("worker shutting down")

    monkeypatch.setattr(jobs, "run_batch", interrupted)
    with pytest.raises(Reject) as rejected:
        tasks.run_batch("batch_x")
    assert rejected.value.requeue


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

"""The worker's Celery app, configured once from hybatch settings.

One task at a time per process (solo pool, prefetch 1). The batch and shard tasks are
acknowledged when taken: leases in the database decide recovery (``worker.tasks``), so the
broker's visibility timeout plays no part. No result backend: results live in the database.

Brokers: Redis when distributed; embedded, kombu's SQLAlchemy transport over a SQLite file in
the data dir (``sqla+sqlite:///<data dir>/broker.db``), which needs no server.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from billing.beat import beat_schedule
from hybatch.settings import Settings, get_settings
from hybatch.tasks import SWEEP_TASK


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app consuming ``settings.task_queue`` on ``settings.broker_url``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded broker's SQLite file
    celery_app = Celery("hybatch-worker", broker=settings.broker_url, include=["worker.tasks"])
    celery_app.conf.update(
        task_default_queue=settings.task_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # `celery -A worker.celery_app beat` runs the monthly close (billing.close_previous_month)
        # and the lease sweep (worker.sweep), which every worker also runs in a thread.
        beat_schedule={
            **beat_schedule,
            "worker-sweep": {"task": SWEEP_TASK, "schedule": timedelta(seconds=settings.lease_s)},
        },
    )
    return celery_app


app = create_celery_app(get_settings())

"""The worker's Celery app, configured once from hybatch settings.

One task at a time per process (solo pool, prefetch 1). Leases in the database, not the broker,
decide recovery (``worker.tasks``); the broker's redelivery is only a harmless extra copy. No result
backend: results live in the database.

Brokers: Redis when distributed; embedded, kombu's SQLAlchemy transport over a SQLite file in
the data dir (``sqla+sqlite:///<data dir>/broker.db``), which needs no server.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from billing.invoicing.close_schedule import beat_schedule
from hybatch.settings import Settings, get_settings
from hybatch.tasks import SWEEP_TASK

REDELIVERY_AFTER_S = 3600


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
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # The batch and shard tasks are acks_late=False, but with the solo pool the broker sees the
        # acknowledgement only when the task returns: Redis hands a SIGKILLed worker's message out
        # again after this long. That copy finds the lease taken or the shard done and returns at
        # once; recovery itself is the sweepers' (two leases). Set here so it is a decision, not
        # kombu's default. (The SQLAlchemy transport passes its options to create_engine: none.)
        celery_app.conf.broker_transport_options = {"visibility_timeout": REDELIVERY_AFTER_S}
    return celery_app


app = create_celery_app(get_settings())

"""The worker's Celery app, configured once from hybatch settings.

One task at a time per process (solo pool, prefetch 1), acknowledged only after it returns
(``acks_late``), so a batch whose worker dies is delivered again and resumes; the job itself
makes that redelivery harmless. No result backend: results live in the database.

Brokers: Redis when distributed; embedded, kombu's SQLAlchemy transport over a SQLite file in
the data dir (``sqla+sqlite:///<data dir>/broker.db``), which needs no server.
"""

from __future__ import annotations

from celery import Celery

from billing.beat import beat_schedule
from hybatch.settings import Settings, completion_window_duration, get_settings


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
        # `celery -A worker.celery_app beat` runs the monthly close (billing.close_previous_month).
        beat_schedule=beat_schedule,
    )
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # Redis hands an unacknowledged message to another worker after this long; a batch may
        # legitimately run for its whole completion window, so never hand it over earlier. (The
        # SQLAlchemy transport passes its options to create_engine, so it gets none.)
        longest_window = max(completion_window_duration(w) for w in settings.completion_windows)
        celery_app.conf.broker_transport_options = {"visibility_timeout": int(longest_window.total_seconds())}
    return celery_app


app = create_celery_app(get_settings())

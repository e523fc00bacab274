"""Publishing batch tasks by name through a Celery app that knows only the broker.

The API never imports the worker (or torch): it sends ``worker.run_batch`` by name.
"""

from __future__ import annotations

import logging
import time

from celery import Celery
from kombu.exceptions import OperationalError

from hybatch.settings import Settings
from hybatch.tasks import RUN_BATCH_TASK

PUBLISH_RETRIES = 3
# Whole-publish attempts on top of kombu's connection retries: the embedded SQLite broker can fail
# a first publish outright while the worker is creating its tables at the same moment.
PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_S = 0.5

log = logging.getLogger(__name__)


class CeleryEnqueuer:
    """A BatchEnqueuer: ``enqueuer(batch_id)`` publishes one ``run_batch`` task or raises."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.queue = queue
        self._celery = Celery("hybatch-api", broker=broker_url, set_as_current=False)
        self._celery.conf.update(
            task_default_queue=queue,
            broker_connection_retry_on_startup=False,
            broker_connection_timeout=5,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryEnqueuer:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the embedded broker's SQLite file
        return cls(settings.broker_url, settings.task_queue)

    def __call__(self, batch_id: str) -> None:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self._publish(batch_id)
                return
            except OperationalError:
                raise  # the broker is unreachable: kombu has retried the connection already
            except Exception as error:  # the broker's own error types vary by transport
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                log.warning("publishing batch %s failed (attempt %d): %s", batch_id, attempt, error)
                time.sleep(PUBLISH_BACKOFF_S * attempt)

    def _publish(self, batch_id: str) -> None:
        self._celery.send_task(
            RUN_BATCH_TASK,
            args=[batch_id],
            queue=self.queue,
            retry=True,
            retry_policy={"max_retries": PUBLISH_RETRIES, "interval_start": 0.2, "interval_step": 0.5},
        )

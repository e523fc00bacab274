"""The Celery task: a thin shell that runs ``worker.jobs.run_batch`` for one batch id.

A worker shutting down (SIGTERM, Ctrl-C) stops the job between engine steps and puts the batch
back on the queue, so it resumes on the next worker instead of waiting out a broker timeout: it
stops consuming, publishes a new message for the batch, then acknowledges its own (a crash in
between leaves two messages; the second is harmless). Rejecting the message with
``requeue=True`` instead would hand it straight back to this worker, since Celery's last poll
before a solo worker exits runs whatever it receives. Any other error is retried with backoff;
when retries run out the batch ends ``failed`` with the lines finished so far. An embedded
worker starting up takes back the batches a killed worker left behind (``worker.recovery``).
"""

from __future__ import annotations

from functools import lru_cache

from celery.exceptions import Ignore
from celery.signals import worker_ready
from celery.utils.log import get_task_logger
from celery.worker import state as worker_state

from billing.beat import CLOSE_TASK
from billing.beat import close_previous_month as close_due_periods
from hybatch.db import make_engine, make_session_factory
from hybatch.settings import get_settings
from hybatch.storage import storage_from_settings
from hybatch.tasks import RUN_BATCH_TASK
from worker import engine_pool, jobs, recovery
from worker.celery_app import app
from worker.metrics_server import render_engine_metrics, start_metrics_server

MAX_RETRIES = 3
RETRY_DELAY_S = 5

log = get_task_logger(__name__)


def _worker_is_stopping() -> bool:
    # Set by Celery's SIGTERM/SIGINT handlers in the worker process, to an exit code (0 included).
    flags = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


@lru_cache(maxsize=1)
def worker_context() -> jobs.JobContext:
    """The process's job context: settings, database sessions, file storage and the engine."""
    settings = get_settings()
    return jobs.JobContext(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        storage=storage_from_settings(settings),
        load_llm=lambda: engine_pool.get_llm(settings),
        shutdown_requested=_worker_is_stopping,
    )


class _TaskConsumer:
    """This worker process's Celery consumer, known from ``worker_ready`` on (solo pool: one)."""

    consumer = None  # celery.worker.consumer.Consumer; None outside a worker (tests, eager calls)

    @classmethod
    def stop(cls) -> None:
        """Take no more messages from the broker (as Celery's own cold shutdown does first)."""
        if cls.consumer is not None and cls.consumer.task_consumer is not None:
            cls.consumer.task_consumer.cancel()


@worker_ready.connect
def keep_task_consumer(sender: object, **_kwargs: object) -> None:
    """Remembers the consumer (``worker_ready``'s sender) so a stopping task can cancel it."""
    _TaskConsumer.consumer = sender


def put_back(interrupted: jobs.JobInterrupted, queue: str) -> None:
    """Stop consuming, then publish the batch again for the next worker; says so on one line."""
    _TaskConsumer.stop()
    run_batch.apply_async(args=[interrupted.batch_id], queue=queue)
    log.warning(
        "the worker is stopping: batch %s put back on the queue %s; it resumes on the next start",
        interrupted.batch_id,
        interrupted.progress,
    )


@app.task(name=RUN_BATCH_TASK, bind=True, max_retries=MAX_RETRIES)
def run_batch(self, batch_id: str) -> str | None:
    """Run one batch to its end (or until the worker stops); returns the batch's final status."""
    context = worker_context()
    try:
        status = jobs.run_batch(batch_id, context)
    except jobs.JobInterrupted as interrupted:
        put_back(interrupted, context.settings.task_queue)
        raise Ignore from None  # acknowledged, no result, no traceback: the new message carries on
    except Exception as error:
        if self.request.retries < MAX_RETRIES:
            log.exception("batch %s failed (attempt %d); retrying", batch_id, self.request.retries + 1)
            raise self.retry(exc=error, countdown=RETRY_DELAY_S * 2**self.request.retries) from error
        jobs.fail_batch(batch_id, context, message=f"The worker could not run the batch: {error}")
        raise
    log.info("batch %s is %s", batch_id, status)
    return None if status is None else status.value


@worker_ready.connect
def serve_metrics(**_kwargs: object) -> None:
    """Starts the Prometheus endpoint when HYBATCH_WORKER_METRICS_PORT is set."""
    port = worker_context().settings.worker_metrics_port
    if port:
        start_metrics_server(port, render_engine_metrics)
        log.info("prefix-cache metrics at http://0.0.0.0:%d/metrics", port)


@worker_ready.connect
def take_back_orphaned_batches(**_kwargs: object) -> list[str]:
    """Embedded broker only: publish again the batches a killed worker left (see worker.recovery)."""
    context = worker_context()
    if not recovery.is_embedded_broker(context.settings.broker_url):
        return []
    with context.session_factory() as session:
        batch_ids = recovery.claimed_unfinished_batch_ids(session)
    for batch_id in batch_ids:
        log.warning("batch %s was left unfinished by an earlier worker; queueing it again", batch_id)
        run_batch.apply_async(args=[batch_id], queue=context.settings.task_queue)
    return batch_ids


@app.task(name=CLOSE_TASK)
def close_previous_month() -> int:
    """The monthly close on beat's schedule (idempotent); returns how many periods it closed."""
    return len(close_due_periods(worker_context().session_factory))

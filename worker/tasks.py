"""The Celery tasks: thin shells over ``worker.jobs.run_batch`` (a batch's own work),
``worker.shard_job.run_shard`` (one shard) and ``worker.sweeper.sweep`` (stale leases).

Leases in the database, not the broker, decide who runs what and when work is run again
(``hybatch.leases``): a SIGKILLed worker's shards are sent again by a sweeper once their lease
expires, within two lease periods. The tasks are ``acks_late=False`` (never rejected back to the
queue on a worker's death); a copy the broker still redelivers later (Redis, after an hour: see
``worker.celery_app``) finds the lease taken or the shard done and returns at once.

A worker shutting down (SIGTERM, Ctrl-C) stops between engine steps, gives its lease back and
puts the work back on the queue, so it resumes on the next worker at once: it stops consuming,
then publishes a new message (a crash in between leaves the work to the sweepers). A worker whose
engine cannot be loaded, or fails while running a shard (a tensor-parallel rank died), hands the
shard to the other workers the same way and then exits with ``EXIT_NO_ENGINE``: it fails no request
and bills nothing more. Any other error is retried with backoff; when retries run out the batch ends
``failed`` with the lines finished so far.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from celery.exceptions import Ignore
from celery.signals import worker_ready, worker_shutting_down
from celery.utils.log import get_task_logger
from celery.worker import state as worker_state

from billing.invoicing.close_schedule import CLOSE_TASK
from billing.invoicing.close_schedule import close_previous_month as close_due_periods
from hybatch import worker_registry
from hybatch.db import make_engine, make_session_factory
from hybatch.leases import Lease
from hybatch.settings import Settings, get_settings
from hybatch.stale_work import mark_batch_published, mark_shard_published
from hybatch.storage import storage_from_settings
from hybatch.tasks import RUN_BATCH_TASK, RUN_SHARD_TASK, SWEEP_TASK
from hybatch.worker_registry import this_worker
from worker import engine_pool, jobs, shard_job, sweeper
from worker.celery_app import app
from worker.metrics_server import render_engine_metrics, start_metrics_server

MAX_RETRIES = 3
RETRY_DELAY_S = 5

log = get_task_logger(__name__)


def _worker_is_stopping() -> bool:
    # Set by Celery's SIGTERM/SIGINT handlers in the worker process, to an exit code (0 included).
    flags = (worker_state.should_stop, worker_state.should_terminate)
    return any(flag is not None and flag is not False for flag in flags)


class CeleryTaskSender:
    """A ``jobs.TaskSender`` publishing to the shared queue, or to one worker's own."""

    def __init__(self, queue: str) -> None:
        self.queue = queue

    def run_batch(self, batch_id: str) -> None:
        run_batch.apply_async(args=[batch_id], queue=self.queue)

    def run_shard(self, batch_id: str, shard_index: int, queue: str | None = None) -> None:
        run_shard.apply_async(args=[batch_id, shard_index], queue=queue or self.queue)


@lru_cache(maxsize=1)
def worker_context() -> jobs.JobContext:
    """The process's job context: settings, database sessions, file storage, the engine, its lease name."""
    settings = get_settings()
    return jobs.JobContext(
        settings=settings,
        session_factory=make_session_factory(make_engine(settings.database_url)),
        storage=storage_from_settings(settings),
        load_llm=lambda: engine_pool.get_llm(settings),
        lease=lease_for(settings),
        send=CeleryTaskSender(settings.task_queue),
        shutdown_requested=_worker_is_stopping,
    )


def lease_for(settings: Settings) -> Lease:
    """This process's lease name (its ``worker_registry`` identity's), with the settings' lease length."""
    return Lease(owner=this_worker(settings).lease_owner, duration=timedelta(seconds=settings.lease_s))


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


def put_back(interrupted: jobs.JobInterrupted, context: jobs.JobContext) -> None:
    """Stop consuming, then publish the work again for the next worker; says so on one line."""
    _TaskConsumer.stop()
    batch_id, shard_index = interrupted.batch_id, interrupted.shard_index
    with context.session_factory() as session:
        if shard_index is None:
            context.send.run_batch(batch_id)
            mark_batch_published(session, batch_id)
        else:
            context.send.run_shard(batch_id, shard_index)
            mark_shard_published(session, batch_id, shard_index)
        session.commit()
    log.warning(
        "the worker is stopping: batch %s put back on the queue %s; it resumes on the next start",
        batch_id,
        interrupted.progress,
    )


def hand_over(batch_id: str, shard_index: int, context: jobs.JobContext, why: str) -> None:
    """This worker cannot run shards (``why`` says so): put the shard back for the others, stop.

    The shard's lease is free already (never taken, or given back by ``shard_job``), so the new
    message lets another worker resume it at once. Retrying here would fail the batch after three
    attempts although other workers can run it; a worker without a working engine must not take
    more shards either. The worker exits with ``EXIT_NO_ENGINE`` after this task, for its supervisor
    to restart it (or an operator to look).
    """
    _TaskConsumer.stop()
    with context.session_factory() as session:
        context.send.run_shard(batch_id, shard_index)
        mark_shard_published(session, batch_id, shard_index)
        session.commit()
    worker_state.should_stop = EXIT_NO_ENGINE
    log.error(
        "%s: stopping this worker; shard %d of batch %s is back on the queue for the other workers",
        why,
        shard_index,
        batch_id,
    )


def _give_up(task, batch_id: str, context: jobs.JobContext, error: Exception, what: str):
    """Retry with backoff; once retries run out, end the batch ``failed``."""
    if task.request.retries < MAX_RETRIES:
        log.exception("%s failed (attempt %d); retrying", what, task.request.retries + 1)
        raise task.retry(exc=error, countdown=RETRY_DELAY_S * 2**task.request.retries) from error
    jobs.fail_batch(batch_id, context, message=f"The worker could not run the batch: {error}")
    raise error


@app.task(name=RUN_BATCH_TASK, bind=True, max_retries=MAX_RETRIES, acks_late=False)
def run_batch(self, batch_id: str) -> str | None:
    """The batch's own work (validate and shard, finalize, end); returns the batch's status after."""
    context = worker_context()
    try:
        status = jobs.run_batch(batch_id, context)
    except jobs.JobInterrupted as interrupted:
        put_back(interrupted, context)
        raise Ignore from None  # no result, no traceback: the new message carries on
    except Exception as error:
        _give_up(self, batch_id, context, error, f"batch {batch_id}")
    log.info("batch %s is %s", batch_id, status)
    return None if status is None else status.value


# The worker's exit code when it stops because it cannot load its engine or the engine failed
# (sysexits' EX_SOFTWARE); the log line before it says which.
EXIT_NO_ENGINE = 70


@app.task(name=RUN_SHARD_TASK, bind=True, max_retries=MAX_RETRIES, acks_late=False)
def run_shard(self, batch_id: str, shard_index: int) -> str | None:
    """One shard of a batch under its lease; returns the batch's status after."""
    context = worker_context()
    try:
        status = shard_job.run_shard(batch_id, shard_index, context)
    except jobs.JobInterrupted as interrupted:
        put_back(interrupted, context)
        raise Ignore from None
    except shard_job.EngineUnavailable as error:
        hand_over(batch_id, shard_index, context, f"this worker cannot load its engine ({error})")
        raise Ignore from None
    except shard_job.EngineFailed as error:
        why = (
            f"the engine failed ({error}); the requests of the shard recorded so far stay, "
            "the others were neither recorded nor billed"
        )
        hand_over(batch_id, shard_index, context, why)
        raise Ignore from None
    except Exception as error:
        _give_up(self, batch_id, context, error, f"shard {shard_index} of batch {batch_id}")
    log.info("shard %d of batch %s: the batch is %s", shard_index, batch_id, status)
    return None if status is None else status.value


@app.task(name=SWEEP_TASK, acks_late=False, ignore_result=True)
def sweep() -> int:
    """Beat's sweep for stale leases (every worker also runs one in a thread); returns tasks sent."""
    context = worker_context()
    work = sweeper.sweep(context.session_factory, context.send, context.settings)
    sweeper.deliver_webhooks(context.session_factory, context.settings)
    return len(work.batch_ids) + len(work.shards)


class _Sweeper:
    thread: sweeper.SweeperThread | None = None


@worker_ready.connect
def start_sweeper(**_kwargs: object) -> None:
    """Sweeps every half lease in this process; an embedded worker first ends its predecessor's leases."""
    context = worker_context()
    settings = context.settings
    if sweeper.is_embedded_broker(settings.broker_url):
        if sweeper.expire_leases_of_others(context.session_factory, context.lease.owner):
            log.warning("taking back the work an earlier worker left unfinished")
        sweeper.sweep(context.session_factory, context.send, settings)
    worker = this_worker(settings)
    with context.session_factory() as session:
        worker_registry.register(session, worker)
    log.info("worker %s: consuming %s and its own queue %s", worker.name, settings.task_queue, worker.queue)
    _Sweeper.thread = sweeper.SweeperThread(
        context.session_factory,
        context.send,
        settings,
        interval_s=sweeper.sweep_interval_s(settings),
        worker=worker,
    )
    _Sweeper.thread.start()


@worker_shutting_down.connect
def stop_sweeper(**_kwargs: object) -> None:
    """Stop sweeping and route nothing more here (what waits in this worker's queue goes elsewhere)."""
    if _Sweeper.thread is not None:
        _Sweeper.thread.stop()
        context = worker_context()
        try:
            with context.session_factory() as session:
                worker_registry.deregister(session, this_worker(context.settings))
        except Exception:  # the database is away: the row ages out after two leases
            log.exception("could not deregister this worker")


@worker_ready.connect
def serve_metrics(**_kwargs: object) -> None:
    """Starts the Prometheus endpoint when HYBATCH_WORKER_METRICS_PORT is set."""
    port = worker_context().settings.worker_metrics_port
    if port:
        start_metrics_server(port, render_engine_metrics)
        log.info("prefix-cache metrics at http://0.0.0.0:%d/metrics", port)


@app.task(name=CLOSE_TASK)
def close_previous_month() -> int:
    """The monthly close on beat's schedule (idempotent); returns how many periods it closed."""
    return len(close_due_periods(worker_context().session_factory))

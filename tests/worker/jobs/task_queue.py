"""The worker's task queue for job tests: tasks sent go into a FIFO that the test drains.

``drain`` runs queued tasks the way a worker takes them from the broker, one at a time in order,
and, once the queue is empty, does what a sweeper would (``claim_stale_work`` with no grace), so
work whose task was lost to a crash is sent again: ``drive`` therefore runs a batch to its end.
"""

from __future__ import annotations

from collections import deque
from datetime import timedelta

from hybatch.batch_lifecycle import current_status
from hybatch.models import BatchStatus
from hybatch.stale_work import claim_stale_work
from worker import jobs, shard_job


class FakeConsumer:
    """Stands in for kombu's consumer of the worker's queue: records that it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class QueuedTasks:
    """A ``jobs.TaskSender`` that keeps what it is sent: ``("batch", id)`` / ``("shard", id, index)``."""

    def __init__(self) -> None:
        self.tasks: deque[tuple] = deque()
        self.queues: list[str | None] = []  # each shard task's queue: None for the shared one

    def run_batch(self, batch_id: str) -> None:
        self.tasks.append(("batch", batch_id))

    def run_shard(self, batch_id: str, shard_index: int, queue: str | None = None) -> None:
        self.tasks.append(("shard", batch_id, shard_index))
        self.queues.append(queue)


def run_task(task: tuple, context: jobs.JobContext) -> BatchStatus | None:
    if task[0] == "batch":
        return jobs.run_batch(task[1], context)
    return shard_job.run_shard(task[1], task[2], context)


def drain(context: jobs.JobContext, *, sweep: bool = True, max_tasks: int = 10_000) -> int:
    """Run queued tasks until none is left (sweeping for lost ones when ``sweep``); returns how many ran."""
    queue: QueuedTasks = context.send  # type: ignore[assignment]
    num_run = 0
    while num_run < max_tasks:
        if not queue.tasks and sweep:
            with context.session_factory() as session:
                work = claim_stale_work(
                    session, lease=timedelta(0), republish_after=timedelta(0), affinity_wait=timedelta(0)
                )
            queue.tasks.extend(("shard", b, i) for b, i in work.shards)
            queue.tasks.extend(("batch", b) for b in work.batch_ids)
        if not queue.tasks:
            return num_run
        run_task(queue.tasks.popleft(), context)
        num_run += 1
    raise RuntimeError(f"still tasks queued after {max_tasks}")


def drive(batch_id: str, context: jobs.JobContext) -> BatchStatus | None:
    """The batch's task (as the API sends it), then every task that follows; the batch's status after."""
    jobs.run_batch(batch_id, context)
    drain(context)
    with context.session_factory() as session:
        return current_status(session, batch_id)

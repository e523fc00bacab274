"""An engine that fails mid-shard (a tensor-parallel rank died): the worker gives the shard back and
stops; another worker resumes it; every request is recorded and billed exactly once."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import closing
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.exceptions import Ignore

from hybatch.leases import Lease, new_lease_owner
from hybatch.models import BatchShard, BatchStatus, ShardStatus
from tests.worker.jobs.batches import (
    SERVED_MODEL,
    InterceptedLLM,
    assert_usage_consistent,
    chat_line,
    read_outcome,
    submit,
)
from tests.worker.jobs.task_queue import FakeConsumer, QueuedTasks, drain
from worker import jobs, shard_job
from worker.engine import EngineFailure

NUM_REQUESTS = 12
SHARD_REQUESTS = 4
RANK_DIED = "rank 1 of 2 exited with signal SIGKILL during a decode step"


def lines() -> list[dict]:
    # Three system prompts, four questions each: three shards of four requests.
    return [
        chat_line(f"req-{i}", f"Question {i}: count to {i}.", system=f"You are assistant {i % 3}.")
        for i in range(NUM_REQUESTS)
    ]


class RankDiesLLM:
    """A real engine whose ``num_outputs``-th output is never handed over: the engine fails instead,
    as ``LLM`` does when a rank dies. Once failed it answers nothing, its counters included."""

    def __init__(self, llm, num_outputs: int) -> None:
        self.llm = llm
        self.num_outputs = num_outputs
        self.handed_over = 0
        self.failed = False

    def generate_stream(self, prompts, sampling_params, request_ids, should_stop=None):
        self._check_alive()
        with closing(self.llm.generate_stream(prompts, sampling_params, request_ids, should_stop)) as stream:
            for output in stream:
                if self.handed_over + 1 == self.num_outputs:
                    self.failed = True
                    raise EngineFailure(RANK_DIED)
                self.handed_over += 1
                yield output

    def embed(self, prompts):
        self._check_alive()
        return self.llm.embed(prompts)

    def cache_metrics(self):
        self._check_alive()
        return self.llm.cache_metrics()

    def _check_alive(self) -> None:
        if self.failed:
            raise AssertionError("a failed engine was used again")


@pytest.fixture
def sharded(context: jobs.JobContext) -> jobs.JobContext:
    settings = context.settings.model_copy(update={"shard_requests": SHARD_REQUESTS})
    return dataclasses.replace(context, settings=settings)


def another_worker(context: jobs.JobContext) -> jobs.JobContext:
    return dataclasses.replace(
        context, lease=Lease(owner=new_lease_owner(), duration=timedelta(seconds=30)), send=QueuedTasks()
    )


def shard_row(context: jobs.JobContext, batch_id: str, shard_index: int) -> BatchShard:
    with context.session_factory() as session:
        row = session.get(BatchShard, (batch_id, shard_index))
        session.expunge_all()
    return row


def planned_batch(context: jobs.JobContext) -> str:
    batch_id = submit(context, lines())
    assert jobs.run_batch(batch_id, context) is BatchStatus.IN_PROGRESS
    context.send.tasks.clear()
    return batch_id


def assert_every_request_once(context: jobs.JobContext, batch_id: str, kept: dict[str, str]) -> None:
    outcome = read_outcome(context, batch_id)
    assert outcome.batch.status is BatchStatus.COMPLETED
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert outcome.error_lines == [] and outcome.batch.failed_requests == 0
    assert_usage_consistent(outcome)  # one usage record per output line: each request billed once
    assert len(outcome.usage) == NUM_REQUESTS
    # The requests recorded before the failure were not run again: their lines are the same.
    assert kept.items() <= {r.custom_id: r.line["id"] for r in outcome.results}.items()


def test_a_failed_engine_gives_the_shard_back_with_what_it_recorded_and_bills_nothing_else(
    sharded: jobs.JobContext, llm
) -> None:
    batch_id = planned_batch(sharded)
    dying = RankDiesLLM(llm, num_outputs=3)  # two requests recorded, then a rank dies
    stricken = dataclasses.replace(sharded, load_llm=lambda: dying)

    with pytest.raises(shard_job.EngineFailed, match=f"EngineFailure: {RANK_DIED}"):
        shard_job.run_shard(batch_id, 0, stricken)

    first = read_outcome(sharded, batch_id)
    assert first.batch.status is BatchStatus.IN_PROGRESS
    assert len(first.results) == len(first.usage) == first.batch.completed_requests == 2
    assert first.batch.failed_requests == 0  # no request marked failed
    # The lease is given back at once (not left to expire): the shard is free for the next worker.
    row = shard_row(sharded, batch_id, 0)
    assert (row.status, row.lease_owner, row.lease_expires_at) == (ShardStatus.PENDING, None, None)
    assert not stricken.send.tasks  # the job sends nothing; its task puts the shard back

    other = another_worker(sharded)
    other.send.run_shard(batch_id, 0)  # what the stricken worker's task publishes
    drain(other)
    assert_every_request_once(sharded, batch_id, {r.custom_id: r.line["id"] for r in first.results})
    assert shard_row(sharded, batch_id, 0).attempts == 2


def test_the_task_puts_the_shard_back_and_stops_the_worker_without_retrying_or_failing_the_batch(
    tasks, sharded: jobs.JobContext, llm, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from celery.worker import state as worker_state

    batch_id = planned_batch(sharded)
    task_consumer = FakeConsumer()
    monkeypatch.setattr(tasks._TaskConsumer, "consumer", None)  # put back after the test
    tasks.keep_task_consumer(sender=SimpleNamespace(task_consumer=task_consumer))
    monkeypatch.setattr(worker_state, "should_stop", None)
    published: list[tuple] = []

    class Sender(QueuedTasks):
        def run_shard(self, batch_id, shard_index, queue=None):
            assert queue is None, "handed to the shared queue, for any other worker"
            assert task_consumer.cancelled, "published while still consuming: this worker would take it back"
            assert shard_row(sharded, batch_id, shard_index).lease_owner is None, (
                "published before the release"
            )
            published.append((batch_id, shard_index))

    stricken = dataclasses.replace(sharded, load_llm=lambda: RankDiesLLM(llm, num_outputs=2), send=Sender())
    monkeypatch.setattr(tasks, "worker_context", lambda: stricken)
    planned_at = shard_row(sharded, batch_id, 1).published_at
    with caplog.at_level(logging.INFO), pytest.raises(Ignore):  # acknowledged, never retried
        tasks.run_shard(batch_id, 1)

    assert published == [(batch_id, 1)]
    assert worker_state.should_stop == tasks.EXIT_NO_ENGINE  # this worker exits after the task
    [record] = [r for r in caplog.records if "engine failed" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert record.getMessage() == (
        f"the engine failed (EngineFailure: {RANK_DIED}); the requests of the shard recorded so far "
        f"stay, the others were neither recorded nor billed: stopping this worker; shard 1 of batch "
        f"{batch_id} is back on the queue for the other workers"
    )
    first = read_outcome(sharded, batch_id)
    assert first.batch.status is BatchStatus.IN_PROGRESS and first.batch.failed_requests == 0
    assert len(first.results) == len(first.usage) == 1
    # Marked sent again, so no sweeper takes the new message for a lost one and sends another.
    assert shard_row(sharded, batch_id, 1).published_at > planned_at

    other = another_worker(sharded)
    other.send.tasks.extend([("shard", batch_id, 1), ("shard", batch_id, 0), ("shard", batch_id, 2)])
    drain(other)
    assert_every_request_once(sharded, batch_id, {r.custom_id: r.line["id"] for r in first.results})


def test_an_engine_failing_on_its_first_output_records_nothing_and_the_shard_resumes_whole(
    sharded: jobs.JobContext, llm
) -> None:
    batch_id = planned_batch(sharded)
    stricken = dataclasses.replace(sharded, load_llm=lambda: RankDiesLLM(llm, num_outputs=1))
    with pytest.raises(shard_job.EngineFailed):
        shard_job.run_shard(batch_id, 2, stricken)
    assert read_outcome(sharded, batch_id).results == []
    assert shard_row(sharded, batch_id, 2).status is ShardStatus.PENDING

    other = another_worker(sharded)
    other.send.tasks.extend([("shard", batch_id, 2), ("shard", batch_id, 0), ("shard", batch_id, 1)])
    drain(other)
    assert_every_request_once(sharded, batch_id, {})


class DeadEngine:
    """An engine whose rank died after its last call: the next one fails at once."""

    def cache_metrics(self):
        raise EngineFailure(RANK_DIED)

    def generate_stream(self, prompts, sampling_params, request_ids, should_stop=None):
        raise EngineFailure(RANK_DIED)


def test_an_engine_that_died_between_two_shards_fails_the_next_one_before_it_records(
    sharded: jobs.JobContext,
) -> None:
    batch_id = planned_batch(sharded)
    with pytest.raises(shard_job.EngineFailed, match=RANK_DIED):
        shard_job.run_shard(batch_id, 1, dataclasses.replace(sharded, load_llm=DeadEngine))
    assert read_outcome(sharded, batch_id).results == []
    assert shard_row(sharded, batch_id, 1).lease_owner is None


class EmbedderWhoseRankDies:
    def embed(self, prompts):
        raise EngineFailure(RANK_DIED)


def test_an_embeddings_shard_whose_engine_fails_records_nothing(context: jobs.JobContext, llm) -> None:
    embedding_lines = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": SERVED_MODEL, "input": f"text {i}"},
        }
        for i in range(3)
    ]
    batch_id = submit(context, embedding_lines, endpoint="/v1/embeddings")
    assert jobs.run_batch(batch_id, context) is BatchStatus.IN_PROGRESS
    context.send.tasks.clear()
    stricken = dataclasses.replace(context, load_llm=EmbedderWhoseRankDies)
    with pytest.raises(shard_job.EngineFailed, match=RANK_DIED):
        shard_job.run_shard(batch_id, 0, stricken)
    outcome = read_outcome(context, batch_id)
    assert outcome.results == [] and outcome.usage == [] and outcome.batch.failed_requests == 0
    assert shard_row(context, batch_id, 0).status is ShardStatus.PENDING

    context.send.run_shard(batch_id, 0)
    drain(context)
    outcome = read_outcome(context, batch_id)
    assert outcome.batch.status is BatchStatus.COMPLETED and len(outcome.usage) == 3


def test_a_rank_killed_mid_batch_of_a_real_two_rank_engine(
    sharded: jobs.JobContext, service_checkpoint, llm
) -> None:
    """The same with the engine's own failure: rank 1 of a tensor-parallel engine on gloo is SIGKILLed
    once the first request is recorded. Requests the engine had finished in that step are still handed
    over and recorded; the failure comes at its next collective (this shard's or the next one's)."""
    from worker.engine import LLM

    two_ranks = LLM(
        service_checkpoint, device="cpu", enable_prefix_caching=True, kv_cache_gb=0.02, tensor_parallel_size=2
    )
    try:
        batch_id = planned_batch(sharded)
        [follower] = two_ranks.followers.processes

        def kill_rank_1(num_outputs: int) -> None:
            if num_outputs == 1:
                follower.kill()
                follower.join(timeout=10)

        stricken = dataclasses.replace(sharded, load_llm=lambda: InterceptedLLM(two_ranks, kill_rank_1))
        with pytest.raises(shard_job.EngineFailed, match=r"rank 1 \(pid \d+\) exited with signal 9"):
            shard_job.run_shard(batch_id, 0, stricken)
    finally:
        two_ranks.close()

    first = read_outcome(sharded, batch_id)
    assert 1 <= len(first.results) == len(first.usage) < NUM_REQUESTS and first.batch.failed_requests == 0
    shards = [shard_row(sharded, batch_id, index) for index in range(NUM_REQUESTS // SHARD_REQUESTS)]
    assert all(row.lease_owner is None for row in shards)  # the failed shard's lease given back
    assert any(row.status is ShardStatus.PENDING for row in shards)
    other = another_worker(sharded)  # one rank: the session's engine
    other.send.tasks.extend(("shard", batch_id, row.shard_index) for row in shards)
    drain(other)
    assert_every_request_once(sharded, batch_id, {r.custom_id: r.line["id"] for r in first.results})

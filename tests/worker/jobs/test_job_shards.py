"""A batch cut into shards: many tasks, one result, every request once, leases deciding who records."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hybatch.batches import cancel_batch
from hybatch.leases import Lease, new_lease_owner, take_shard
from hybatch.models import BatchShard, BatchStatus, ShardStatus, utc_now
from tests.worker.jobs.batches import InterceptedLLM, assert_usage_consistent, chat_line, read_outcome, submit
from tests.worker.jobs.task_queue import QueuedTasks, drain, drive, run_task
from worker import jobs, shard_job

NUM_REQUESTS = 12
SHARD_REQUESTS = 4


def lines() -> list[dict]:
    # Three system prompts, four questions each: the shards should follow the prompts.
    return [
        chat_line(
            f"req-{i}",
            f"Question {i}: count to {i}.",
            system=f"You are assistant {i % 3}.",
            max_tokens=2 + i % 4,
        )
        for i in range(NUM_REQUESTS)
    ]


@pytest.fixture
def sharded(context: jobs.JobContext) -> jobs.JobContext:
    settings = context.settings.model_copy(update={"shard_requests": SHARD_REQUESTS})
    return dataclasses.replace(context, settings=settings)


def shards_of(context: jobs.JobContext, batch_id: str) -> list[BatchShard]:
    with context.session_factory() as session:
        rows = list(
            session.scalars(
                sa.select(BatchShard).where(BatchShard.batch_id == batch_id).order_by(BatchShard.shard_index)
            )
        )
        session.expunge_all()
    return rows


def test_a_sharded_batch_gives_the_same_lines_as_one_shard(context: jobs.JobContext, sharded) -> None:
    whole = submit(context, lines(), account="whole")
    assert drive(whole, context) is BatchStatus.COMPLETED
    split = submit(sharded, lines(), account="split")
    assert jobs.run_batch(split, sharded) is BatchStatus.IN_PROGRESS
    sent = list(sharded.send.tasks)
    assert sent == [("shard", split, i) for i in range(len(sent))] and len(sent) == 3
    drain(sharded)

    one, many = read_outcome(context, whole), read_outcome(sharded, split)
    assert many.batch.status is BatchStatus.COMPLETED and many.batch.total_requests == NUM_REQUESTS
    texts = {
        outcome: {
            line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
            for line in o.output_lines
        }
        for outcome, o in (("one", one), ("many", many))
    }
    assert texts["one"] == texts["many"] and len(texts["many"]) == NUM_REQUESTS
    # Output lines are in input order across shards, one per request.
    assert [line["custom_id"] for line in many.output_lines] == [f"req-{i}" for i in range(NUM_REQUESTS)]
    assert_usage_consistent(many)
    rows = shards_of(sharded, split)
    assert [row.status for row in rows] == [ShardStatus.DONE] * 3
    assert sum(row.num_requests for row in rows) == NUM_REQUESTS
    # Each shard holds one system prompt's questions (the cut follows the prompt tree).
    assert {row.num_requests for row in rows} == {4}
    # The shards' stored requests are removed once the batch has its files.
    for row in rows:
        with pytest.raises(FileNotFoundError):
            sharded.storage.open_read(row.input_key)


def test_a_worker_that_lost_its_lease_records_nothing_more(sharded, llm) -> None:
    batch_id = submit(sharded, lines())
    jobs.run_batch(batch_id, sharded)
    sharded.send.tasks.clear()
    other = dataclasses.replace(
        sharded, lease=Lease(owner=new_lease_owner(), duration=timedelta(seconds=30)), send=QueuedTasks()
    )

    def stall_then_lose_the_lease(num_outputs: int) -> None:
        if num_outputs == 1:  # this worker stalls past its lease; another one takes the shard over
            with sharded.session_factory() as session:
                session.execute(
                    sa.update(BatchShard)
                    .where(BatchShard.batch_id == batch_id, BatchShard.shard_index == 0)
                    .values(lease_expires_at=utc_now() - timedelta(seconds=1))
                )
                session.commit()
                assert take_shard(session, batch_id, 0, other.lease)

    stalled = dataclasses.replace(sharded, load_llm=lambda: InterceptedLLM(llm, stall_then_lose_the_lease))
    assert shard_job.run_shard(batch_id, 0, stalled) is BatchStatus.IN_PROGRESS
    first = read_outcome(sharded, batch_id)
    assert first.batch.completed_requests == 1  # the one recorded before the takeover

    shard_job.run_shard(batch_id, 0, other)  # it may go on with the shards of the same subtree
    drain(other)  # and whatever is left
    outcome = read_outcome(sharded, batch_id)
    assert outcome.batch.status is BatchStatus.COMPLETED
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert_usage_consistent(outcome)
    assert shards_of(sharded, batch_id)[0].attempts == 2


def test_a_cancel_reaches_the_running_shard_and_ends_the_whole_batch(sharded, llm) -> None:
    batch_id = submit(sharded, lines())
    account_id = read_outcome(sharded, batch_id).batch.account_id

    def cancel_after_two(num_outputs: int) -> None:
        if num_outputs == 2:
            with sharded.session_factory() as api_session:
                cancel_batch(api_session, account_id, batch_id)

    cancelling = dataclasses.replace(sharded, load_llm=lambda: InterceptedLLM(llm, cancel_after_two))
    jobs.run_batch(batch_id, cancelling)
    first_shard = cancelling.send.tasks.popleft()
    assert run_task(first_shard, cancelling) is BatchStatus.CANCELLED  # the shard's worker ended it

    outcome = read_outcome(sharded, batch_id)
    assert 2 <= outcome.batch.completed_requests < SHARD_REQUESTS
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert {line["error"]["code"] for line in outcome.error_lines} == {"batch_cancelled"}
    assert_usage_consistent(outcome)
    # The other shards' tasks, arriving later, change nothing.
    drain(cancelling)
    assert read_outcome(sharded, batch_id).output_lines == outcome.output_lines


def test_a_budget_capped_batch_is_one_shard(sharded) -> None:
    batch_id = submit(sharded, lines(), metadata={"max_cost": "100"})
    assert drive(batch_id, sharded) is BatchStatus.COMPLETED
    assert [row.num_requests for row in shards_of(sharded, batch_id)] == [NUM_REQUESTS]


def test_the_worker_that_ran_a_shard_runs_the_rest_of_its_subtree(sharded) -> None:
    # Two system prompts with eight questions each: two shards per prompt.
    lines = [
        chat_line(
            f"req-{i}",
            f"Question {i}.",
            system=("alpha " if i % 2 == 0 else "omega ") * 30,
            max_tokens=2,
        )
        for i in range(16)
    ]
    batch_id = submit(sharded, lines)
    jobs.run_batch(batch_id, sharded)
    rows = shards_of(sharded, batch_id)
    assert [row.continues_previous for row in rows] == [False, True, False, True]
    assert list(sharded.send.tasks) == [("shard", batch_id, i) for i in (0, 2, 1, 3)]  # subtrees first

    assert run_task(sharded.send.tasks.popleft(), sharded) is BatchStatus.IN_PROGRESS
    # Shard 0 went on with shard 1 (its subtree, still pending); shard 2 was left to another worker.
    assert [row.status for row in shards_of(sharded, batch_id)] == [
        ShardStatus.DONE,
        ShardStatus.DONE,
        ShardStatus.PENDING,
        ShardStatus.PENDING,
    ]
    drain(sharded)
    outcome = read_outcome(sharded, batch_id)
    assert outcome.batch.status is BatchStatus.COMPLETED
    assert_usage_consistent(outcome)
    # Each system prompt was computed once: the requests after the first of each hit it.
    prefix_hits = [
        line["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
        for line in outcome.output_lines
    ]
    assert sum(1 for cached in prefix_hits if cached == 0) == 2


def test_a_worker_done_with_its_shard_takes_a_dead_workers_shard_first(sharded) -> None:
    batch_id = submit(sharded, lines())
    jobs.run_batch(batch_id, sharded)
    dead = Lease(owner=new_lease_owner(), duration=timedelta(seconds=30))
    with sharded.session_factory() as session:
        assert take_shard(session, batch_id, 2, dead)  # a worker took shard 2, then died
        session.execute(
            sa.update(BatchShard)
            .where(BatchShard.batch_id == batch_id, BatchShard.shard_index == 2)
            .values(lease_expires_at=utc_now() - timedelta(seconds=1))
        )
        session.commit()

    shard_job.run_shard(batch_id, 0, sharded)

    # Shard 0 done, then the dead worker's shard 2 (before shard 1, the next of its own subtree).
    rows = shards_of(sharded, batch_id)
    assert rows[2].status is ShardStatus.DONE and rows[2].attempts == 2
    assert rows[1].status is ShardStatus.PENDING  # shard 2 has no next shard: back to the queue
    drain(sharded)
    outcome = read_outcome(sharded, batch_id)
    assert outcome.batch.status is BatchStatus.COMPLETED
    assert_usage_consistent(outcome)

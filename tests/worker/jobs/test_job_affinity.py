"""Cache affinity in the batch job: a subtree's first shard goes to the worker its prefix picks,
the same worker for the same prefix in a later batch; continuations and put-backs go to the shared
queue; a routed shard its worker does not take is sent to the shared queue after the wait."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hybatch import worker_registry
from hybatch.leases import Lease, release_shard, take_shard
from hybatch.models import BatchShard, utc_now
from hybatch.stale_work import claim_stale_work
from hybatch.worker_registry import WorkerIdentity, own_queue
from tests.worker.jobs.batches import chat_line, read_outcome, submit
from tests.worker.jobs.task_queue import drain
from worker import jobs
from worker.affinity import HELD_PREFIX_LOAD_BOUND

SYSTEM_PROMPTS = [f"{i}{i}{i}: you answer from a long list of facts. " * 4 for i in range(12)]


def fleet() -> list[WorkerIdentity]:
    return [
        WorkerIdentity(name=name, queue=own_queue("hybatch", name), lease_owner=f"host:1:{name}")
        for name in ("gpu-a", "gpu-b")
    ]


@pytest.fixture
def routed(context: jobs.JobContext) -> jobs.JobContext:
    """Two shards per system prompt, and two live workers registered."""
    settings = context.settings.model_copy(update={"shard_requests": 2})
    with context.session_factory() as session:
        for worker in fleet():
            worker_registry.register(session, worker)
    return dataclasses.replace(context, settings=settings)


def lines(questions: str) -> list[dict]:
    return [
        chat_line(f"req-{p}-{q}", f"{questions} {q}?", system=system, max_tokens=1)
        for p, system in enumerate(SYSTEM_PROMPTS)
        for q in range(4)
    ]


def plan(context: jobs.JobContext, batch_lines: list[dict], account: str) -> tuple[str, dict, list]:
    """Plan a batch; returns its id, {head shard's first custom_id: queue}, and the shard rows."""
    context.send.tasks.clear()
    context.send.queues.clear()
    batch_id = submit(context, batch_lines, account=account)
    jobs.run_batch(batch_id, context)
    sent = dict(zip([task[2] for task in context.send.tasks], context.send.queues, strict=True))
    with context.session_factory() as session:
        rows = list(session.scalars(sa.select(BatchShard).where(BatchShard.batch_id == batch_id)))
        session.expunge_all()
    return batch_id, sent, rows


def system_of_shard(context: jobs.JobContext, row: BatchShard) -> str:
    """The system prompt of the shard's requests (custom ids are ``req-<prompt>-<question>``)."""
    from worker.shard_inputs import read_shard_input

    prompt_numbers = {
        request.custom_id.split("-")[1] for request in read_shard_input(context.storage, row.input_key)
    }
    [number] = prompt_numbers  # a shard never mixes two system prompts here
    return SYSTEM_PROMPTS[int(number)]


def test_a_later_batch_sends_each_prefix_to_the_worker_that_computed_it(routed: jobs.JobContext) -> None:
    queues = {worker.queue: worker.name for worker in fleet()}
    routes = []
    for questions in ("First question", "A different question"):
        batch_id, sent, rows = plan(routed, lines(questions), account="acme")
        assert len(rows) == 2 * len(SYSTEM_PROMPTS)
        by_prompt = {}
        for row in rows:
            queue = sent[row.shard_index]
            if row.continues_previous:
                assert queue is None and row.routed_to is None  # continuations: the shared queue
            else:
                assert queue in queues and row.routed_to == queues[queue]
                by_prompt[system_of_shard(routed, row)] = row.routed_to
        assert set(by_prompt) == set(SYSTEM_PROMPTS)
        routes.append(by_prompt)
        drain(routed)
        assert read_outcome(routed, batch_id).batch.completed_requests == len(SYSTEM_PROMPTS) * 4
    assert routes[0] == routes[1]
    assert set(routes[0].values()) == {"gpu-a", "gpu-b"}  # 12 prefixes over 2 workers: both get some


def test_without_affinity_or_workers_every_task_goes_to_the_shared_queue(routed: jobs.JobContext) -> None:
    off = dataclasses.replace(routed, settings=routed.settings.model_copy(update={"shard_affinity": False}))
    _, sent, rows = plan(off, lines("Q"), account="off")
    assert set(sent.values()) == {None} and {row.routed_to for row in rows} == {None}
    with routed.session_factory() as session:
        for worker in fleet():
            worker_registry.deregister(session, worker)
    _, sent, _ = plan(routed, lines("Q"), account="nobody")
    assert set(sent.values()) == {None}


def test_a_busy_worker_is_passed_over_while_the_other_is_idle(routed: jobs.JobContext) -> None:
    _, first, rows = plan(routed, lines("Q"), account="busy")
    # gpu-a now runs a shard of that batch under its lease: its prefixes go to the shared queue.
    busy = fleet()[0]
    with routed.session_factory() as session:
        assert take_shard(session, rows[0].batch_id, 0, Lease(busy.lease_owner, timedelta(seconds=30)))
    _, second, _ = plan(routed, lines("Q again"), account="busy")
    assert busy.queue in first.values()
    assert busy.queue not in second.values()
    idle = fleet()[1].queue
    # The busy worker's picks are shared, so the idle one can start them now; its own stay its own.
    assert set(second.values()) == {idle, None}


def test_a_routed_shard_left_waiting_goes_to_the_shared_queue_once_another_worker_is_idle(
    routed: jobs.JobContext,
) -> None:
    batch_id, _, rows = plan(routed, lines("Q"), account="wait")
    wait = timedelta(seconds=routed.settings.affinity_wait_s)

    def claimed() -> list[int]:
        with routed.session_factory() as session:
            work = claim_stale_work(
                session, lease=timedelta(seconds=30), republish_after=timedelta(hours=1), affinity_wait=wait
            )
        return sorted(index for batch, index in work.shards if batch == batch_id)

    assert claimed() == []  # just sent, both workers idle: the picked workers get their chance
    # Both workers busy with another batch, and the routed shards waited past the wait.
    other_batch, _, _ = plan(routed, lines("Other"), account="other")
    leases = [Lease(worker.lease_owner, timedelta(seconds=30)) for worker in fleet()]
    with routed.session_factory() as session:
        for shard_index, lease in enumerate(leases):
            assert take_shard(session, other_batch, shard_index, lease)
        session.execute(
            sa.update(BatchShard)
            .where(BatchShard.batch_id == batch_id)
            .values(published_at=utc_now() - wait - timedelta(seconds=1))
        )
        session.commit()
    assert claimed() == []  # nobody would take them sooner: they keep their places
    with routed.session_factory() as session:
        release_shard(session, other_batch, 1, leases[1])  # gpu-b is idle now
    waiting_for_a = sorted(row.shard_index for row in rows if row.routed_to == "gpu-a")
    assert waiting_for_a and claimed() == waiting_for_a  # gpu-b's own stay in gpu-b's queue
    assert claimed() == []  # claimed once
    with routed.session_factory() as session:
        routed_to = dict(
            session.execute(
                sa.select(BatchShard.shard_index, BatchShard.routed_to).where(BatchShard.batch_id == batch_id)
            ).all()
        )
    assert all(routed_to[index] is None for index in waiting_for_a)  # now on the shared queue


def test_a_prefix_goes_back_to_the_worker_that_ran_it(routed: jobs.JobContext) -> None:
    # The first batch runs wholly on gpu-b (whatever the hash says), as after a fallback.
    on_b = dataclasses.replace(routed, lease=Lease(fleet()[1].lease_owner, timedelta(seconds=30)))
    plan(on_b, lines("First"), account="ran")
    drain(on_b)
    _, _, rows = plan(routed, lines("Second"), account="ran")
    heads = [row for row in rows if not row.continues_previous]
    cap = math.ceil(HELD_PREFIX_LOAD_BOUND * len(heads) / len(fleet()))  # 9 of the 12 prefixes
    assert [row.routed_to for row in heads].count("gpu-b") == cap < len(heads)
    assert {row.routed_to for row in heads} == {"gpu-a", "gpu-b"}  # the rest: their next choice

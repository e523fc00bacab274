"""Stopping a running batch between engine steps: cancel, expiry, worker shutdown."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hybatch.batches import cancel_batch
from hybatch.leases import release_batch, take_batch
from hybatch.models import Batch, BatchStatus, utc_now
from tests.worker.jobs.batches import InterceptedLLM, assert_usage_consistent, chat_line, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs, shard_job

NUM_REQUESTS = 8


def staggered_lines() -> list[dict]:
    """Requests that finish at different engine steps (their max_tokens differ)."""
    return [chat_line(f"req-{i}", f"Count to {i}.", max_tokens=1 + 3 * i) for i in range(NUM_REQUESTS)]


def with_engine(context: jobs.JobContext, engine) -> jobs.JobContext:
    return dataclasses.replace(context, load_llm=lambda: engine)


def account_of(context: jobs.JobContext, batch_id: str) -> str:
    return read_outcome(context, batch_id).batch.account_id


def assert_every_request_once(outcome, *, unfinished_code: str) -> None:
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert {line["error"]["code"] for line in outcome.error_lines} <= {unfinished_code}
    batch = outcome.batch
    assert batch.total_requests == NUM_REQUESTS
    assert batch.completed_requests + batch.failed_requests == NUM_REQUESTS
    assert_usage_consistent(outcome)  # in particular: no usage for an unfinished request


def test_cancel_between_steps_keeps_finished_lines(context: jobs.JobContext, llm) -> None:
    batch_id = submit(context, staggered_lines())
    account_id = account_of(context, batch_id)

    def cancel_after_two(num_outputs: int) -> None:
        if num_outputs == 2:
            with context.session_factory() as api_session:  # the API, in its own transaction
                assert cancel_batch(api_session, account_id, batch_id).status is BatchStatus.CANCELLING

    assert drive(batch_id, with_engine(context, InterceptedLLM(llm, cancel_after_two))) is (
        BatchStatus.CANCELLED
    )

    outcome = read_outcome(context, batch_id)
    assert 2 <= outcome.batch.completed_requests < NUM_REQUESTS
    assert outcome.batch.cancelled_at is not None and outcome.batch.completed_at is None
    assert_every_request_once(outcome, unfinished_code="batch_cancelled")


def test_cancel_while_validating_reports_every_request_cancelled(context: jobs.JobContext) -> None:
    batch_id = submit(context, staggered_lines())
    with context.session_factory() as session:
        assert take_batch(session, batch_id, context.lease)  # a worker picked it up ...
        cancel_batch(session, account_of(context, batch_id), batch_id)  # ... and the user cancelled
        release_batch(session, batch_id, context.lease)

    assert drive(batch_id, context) is BatchStatus.CANCELLED

    outcome = read_outcome(context, batch_id)
    assert outcome.output_lines == [] and outcome.usage == []
    assert len(outcome.error_lines) == NUM_REQUESTS
    assert_every_request_once(outcome, unfinished_code="batch_cancelled")


def test_expiry_between_steps_reports_the_rest_expired(
    context: jobs.JobContext, llm, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = submit(context, staggered_lines())

    def time_runs_out(num_outputs: int) -> None:
        if num_outputs == 2:
            later = utc_now() + timedelta(days=2)
            monkeypatch.setattr(jobs, "utc_now", lambda: later)
            monkeypatch.setattr(shard_job, "utc_now", lambda: later)

    assert drive(batch_id, with_engine(context, InterceptedLLM(llm, time_runs_out))) is (BatchStatus.EXPIRED)

    outcome = read_outcome(context, batch_id)
    assert 2 <= outcome.batch.completed_requests < NUM_REQUESTS
    assert outcome.batch.expired_at is not None
    assert_every_request_once(outcome, unfinished_code="batch_expired")


def test_a_batch_found_expired_runs_nothing(context: jobs.JobContext) -> None:
    batch_id = submit(context, staggered_lines())
    with context.session_factory() as session, session.begin():
        session.execute(
            sa.update(Batch).where(Batch.id == batch_id).values(expires_at=utc_now() - timedelta(seconds=1))
        )

    def no_engine():
        raise AssertionError("an expired batch must not run")

    assert drive(batch_id, dataclasses.replace(context, load_llm=no_engine)) is BatchStatus.EXPIRED
    outcome = read_outcome(context, batch_id)
    assert outcome.output_lines == [] and outcome.usage == []
    assert_every_request_once(outcome, unfinished_code="batch_expired")


def test_shutdown_stops_between_steps_and_a_later_run_resumes(context: jobs.JobContext, llm) -> None:
    batch_id = submit(context, staggered_lines())
    stopping = []

    def shut_down_after_two(num_outputs: int) -> None:
        if num_outputs == 2:
            stopping.append(True)

    interrupted = dataclasses.replace(
        with_engine(context, InterceptedLLM(llm, shut_down_after_two)),
        shutdown_requested=lambda: bool(stopping),
    )
    with pytest.raises(jobs.JobInterrupted) as raised:
        drive(batch_id, interrupted)
    first = read_outcome(context, batch_id)
    assert first.batch.status is BatchStatus.IN_PROGRESS
    assert 2 <= len(first.results) < NUM_REQUESTS
    stopped = raised.value
    assert (stopped.batch_id, stopped.finished_requests, stopped.total_requests) == (
        batch_id,
        len(first.results),
        NUM_REQUESTS,
    )
    assert stopped.progress == f"at {len(first.results)}/{NUM_REQUESTS}"

    assert drive(batch_id, context) is BatchStatus.COMPLETED
    outcome = read_outcome(context, batch_id)
    assert len(outcome.output_lines) == NUM_REQUESTS
    assert_every_request_once(outcome, unfinished_code="none")


def test_a_stopping_worker_claims_nothing_and_says_how_far_a_batch_got(context: jobs.JobContext) -> None:
    """A message taken in the worker's last poll before it exits is handed back untouched."""
    stopping = dataclasses.replace(context, shutdown_requested=lambda: True)
    batch_id = submit(context, staggered_lines())

    with pytest.raises(jobs.JobInterrupted) as raised:
        drive(batch_id, stopping)
    assert raised.value.progress == "before validation"
    batch = read_outcome(context, batch_id).batch
    assert batch.status is BatchStatus.VALIDATING and batch.claimed_at is None

    assert drive(batch_id, context) is BatchStatus.COMPLETED
    assert drive(batch_id, stopping) is BatchStatus.COMPLETED  # finished: nothing to hand back
    assert drive("batch_unknown", stopping) is None

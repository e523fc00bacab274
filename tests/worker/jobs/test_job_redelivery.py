"""Redelivery and restarts: a job run again resumes after the last committed request."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import pytest

from hybatch.models import BatchStatus
from hybatch.storage import LocalFileStorage
from tests.worker.jobs.batches import InterceptedLLM, assert_usage_consistent, chat_line, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs

NUM_REQUESTS = 6


def lines() -> list[dict]:
    return [chat_line(f"req-{i}", f"Count to {i}.", max_tokens=1 + 2 * i) for i in range(NUM_REQUESTS)]


def line_ids(outcome) -> dict[str, str]:
    return {result.custom_id: result.line["id"] for result in outcome.results}


def test_running_a_completed_batch_again_changes_nothing(context: jobs.JobContext) -> None:
    batch_id = submit(context, lines())
    assert drive(batch_id, context) is BatchStatus.COMPLETED
    before = read_outcome(context, batch_id)

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    after = read_outcome(context, batch_id)
    assert after.batch.output_file_id == before.batch.output_file_id
    assert after.output_lines == before.output_lines
    assert len(after.usage) == len(after.results) == NUM_REQUESTS
    assert after.batch.completed_requests == NUM_REQUESTS


class Crash(Exception):
    pass


def test_a_crash_mid_batch_then_a_rerun_records_nothing_twice(context: jobs.JobContext, llm) -> None:
    batch_id = submit(context, lines())

    def crash_after_three(num_outputs: int) -> None:
        if num_outputs == 3:
            raise Crash("worker died between two requests")

    crashing = dataclasses.replace(context, load_llm=lambda: InterceptedLLM(llm, crash_after_three))
    with pytest.raises(Crash):
        drive(batch_id, crashing)
    first = read_outcome(context, batch_id)
    assert first.batch.status is BatchStatus.IN_PROGRESS
    assert len(first.results) == len(first.usage) == first.batch.completed_requests == 3

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert len(outcome.output_lines) == NUM_REQUESTS
    # The three requests finished before the crash kept their lines: they were not run again.
    assert line_ids(first).items() <= line_ids(outcome).items()
    assert_usage_consistent(outcome)


class FailingOnceStorage(LocalFileStorage):
    """Storage whose first write of a result file fails (a full disk while finalizing)."""

    failed = False

    @contextmanager
    def open_write(self, file_id: str):
        if not self.failed and file_id.startswith("file-"):
            self.failed = True
            raise OSError("disk full")
        with super().open_write(file_id) as writer:
            yield writer


def test_a_crash_while_finalizing_is_finished_by_the_rerun(context: jobs.JobContext) -> None:
    batch_id = submit(context, lines())
    failing = dataclasses.replace(context, storage=FailingOnceStorage(context.settings.files_dir))
    with pytest.raises(OSError):
        drive(batch_id, failing)
    assert read_outcome(context, batch_id).batch.status is BatchStatus.FINALIZING

    assert drive(batch_id, failing) is BatchStatus.COMPLETED
    outcome = read_outcome(context, batch_id)
    assert len(outcome.output_lines) == NUM_REQUESTS
    assert_usage_consistent(outcome)


def test_giving_up_keeps_finished_lines_and_fails_the_rest(context: jobs.JobContext, llm) -> None:
    batch_id = submit(context, lines())

    def crash_after_two(num_outputs: int) -> None:
        if num_outputs == 2:
            raise Crash("engine fault")

    with pytest.raises(Crash):
        drive(batch_id, dataclasses.replace(context, load_llm=lambda: InterceptedLLM(llm, crash_after_two)))

    assert jobs.fail_batch(batch_id, context, message="engine fault") is BatchStatus.FAILED

    outcome = read_outcome(context, batch_id)
    assert len(outcome.output_lines) == 2
    assert {line["error"]["code"] for line in outcome.error_lines} == {"batch_failed"}
    assert sorted(outcome.custom_ids) == sorted(f"req-{i}" for i in range(NUM_REQUESTS))
    assert outcome.batch.errors == [
        {"code": "server_error", "line": None, "message": "engine fault", "param": None}
    ]
    assert_usage_consistent(outcome)
    assert jobs.fail_batch(batch_id, context, message="again") is BatchStatus.FAILED  # already over

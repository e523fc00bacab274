"""jobs.run_batch on SQLite with a tiny random checkpoint: the whole path to ``completed``."""

from __future__ import annotations

import pytest

from hybatch.models import BatchStatus
from hybatch.prompt_tokenizer import PromptTokenizer
from tests.worker.jobs.batches import (
    COMPLETIONS,
    assert_usage_consistent,
    chat_line,
    chat_lines,
    completion_line,
    read_outcome,
    submit,
)
from tests.worker.jobs.task_queue import drive
from worker import jobs


def test_chat_batch_completes_with_every_request_once(context: jobs.JobContext) -> None:
    lines = chat_lines(6)
    batch_id = submit(context, lines)

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    batch = outcome.batch
    assert [line["custom_id"] for line in outcome.output_lines] == [line["custom_id"] for line in lines]
    assert outcome.error_lines == [] and batch.error_file_id is None
    assert (batch.total_requests, batch.completed_requests, batch.failed_requests) == (6, 6, 0)
    assert batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert_usage_consistent(outcome)
    tokenizer = PromptTokenizer.from_checkpoint(context.settings.model)
    for line, sent in zip(outcome.output_lines, lines, strict=True):
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200
        assert body["object"] == "chat.completion" and body["model"] == "tiny-test"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert 1 <= body["usage"]["completion_tokens"] <= 4
        # The prompt the engine ran is the conversation rendered with the checkpoint's chat template.
        rendered = tokenizer.encode_chat(sent["body"]["messages"])
        assert body["usage"]["prompt_tokens"] == len(rendered)


def test_completions_batch_completes(context: jobs.JobContext) -> None:
    lines = [completion_line(f"c{i}", f"hello world {i}") for i in range(3)]
    batch_id = submit(context, lines, endpoint=COMPLETIONS)

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    assert outcome.custom_ids == ["c0", "c1", "c2"]
    assert {line["response"]["body"]["object"] for line in outcome.output_lines} == {"text_completion"}
    assert_usage_consistent(outcome)


def test_shared_prefix_is_served_from_the_cache_on_later_lines(context: jobs.JobContext) -> None:
    system = "The quick brown fox jumps over the lazy dog. " * 4  # many blocks of shared prompt
    lines = [chat_line(f"s{i}", f"Count to {i}.", system=system) for i in range(4)]
    batch_id = submit(context, lines)

    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    cached = [
        line["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
        for line in outcome.output_lines
    ]
    assert sorted(cached)[0] == 0  # the first request of the tree computes the prefix
    assert sum(c > 0 for c in cached) == 3  # every other request hits it
    assert outcome.batch.cached_input_tokens == sum(cached) > 0
    # The batch's prefix-cache metrics agree with its lines.
    metrics = outcome.batch.cache_metrics
    assert metrics["lookups"] == 4 and metrics["hit_tokens"] == sum(cached) == metrics["hit_tokens_device"]
    assert metrics["windows_retained"] >= 1 and 0 < metrics["hit_rate"] < 1
    assert_usage_consistent(outcome)


def test_invalid_input_fails_without_loading_the_model(context: jobs.JobContext) -> None:
    bad = chat_line("b", "hi")
    bad["body"]["model"] = "some-other-model"
    batch_id = submit(context, [chat_line("a", "hi"), bad, chat_line("a", "again")])

    def no_engine():
        raise AssertionError("a batch that fails validation must not load the model")

    context = jobs.JobContext(**{**context.__dict__, "load_llm": no_engine})
    assert drive(batch_id, context) is BatchStatus.FAILED

    outcome = read_outcome(context, batch_id)
    codes = {(error["code"], error["line"]) for error in outcome.batch.errors}
    assert codes == {("invalid_model", 2), ("duplicate_custom_id", 3)}
    assert outcome.batch.failed_at is not None and outcome.batch.in_progress_at is None
    assert outcome.results == [] and outcome.usage == []


def test_a_request_the_engine_rejects_becomes_an_error_line(context: jobs.JobContext, llm) -> None:
    lines = chat_lines(3)
    batch_id = submit(context, lines)

    class RejectsTheSecond:
        def generate_stream(self, prompts, sampling_params, request_ids, should_stop=None):
            from worker.engine import RequestOutput

            yield RequestOutput(request_id=request_ids[1], prompt=None, prompt_token_ids=[], error="too odd")
            keep = [0, 2]
            yield from llm.generate_stream(
                [prompts[i] for i in keep],
                [sampling_params[i] for i in keep],
                [request_ids[i] for i in keep],
                should_stop,
            )

    context = jobs.JobContext(**{**context.__dict__, "load_llm": RejectsTheSecond})
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    assert [line["custom_id"] for line in outcome.output_lines] == ["req-0", "req-2"]
    [error] = outcome.error_lines
    assert error["custom_id"] == "req-1"
    assert error["error"] == {"code": "invalid_request", "message": "too odd"}
    assert (outcome.batch.completed_requests, outcome.batch.failed_requests) == (2, 1)
    assert_usage_consistent(outcome)


@pytest.mark.parametrize("status", ["unknown", "cancelled"])
def test_a_batch_that_is_gone_or_finished_is_left_alone(context: jobs.JobContext, status: str) -> None:
    if status == "unknown":
        assert drive("batch_nope", context) is None
        return
    from hybatch.batches import cancel_batch

    batch_id = submit(context, chat_lines(1))
    with context.session_factory() as session:
        account_id = read_outcome(context, batch_id).batch.account_id
        cancel_batch(session, account_id, batch_id)  # never claimed: cancelled at once
    assert drive(batch_id, context) is BatchStatus.CANCELLED
    assert read_outcome(context, batch_id).results == []

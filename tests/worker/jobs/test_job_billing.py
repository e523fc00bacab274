"""Money on the worker's lines: x_billing per request, the batch's cost so far, budget caps."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billing.pricing.budget_cap import worst_case_cost
from billing.pricing.request_cost import batch_cost_so_far
from billing.pricing.schedule_store import price_book
from billing.usage.buckets import usage_rows
from hybatch.models import BatchEndpoint, BatchStatus, UsageRecord, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.request_body import check_body
from tests.worker.jobs.batches import chat_line, chat_lines, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs


@pytest.fixture
def sharded_context(context: jobs.JobContext) -> jobs.JobContext:
    """Shards of two requests: every shard after the first opens the batch's costing again."""
    return dataclasses.replace(context, settings=context.settings.model_copy(update={"shard_requests": 2}))


# The default schedule's first tier for any model, USD per 1M tokens (billing/pricing/default_schedule.yaml).
HIT, MISS, OUTPUT = Decimal("0.07"), Decimal("0.70"), Decimal("2.10")


def expected_amount(usage: dict) -> Decimal:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    miss = usage["prompt_tokens"] - cached
    return (cached * HIT + miss * MISS + usage["completion_tokens"] * OUTPUT) / Decimal(1_000_000)


def test_every_output_line_carries_its_price(context: jobs.JobContext) -> None:
    batch_id = submit(context, chat_lines(4))
    assert drive(batch_id, context) is BatchStatus.COMPLETED
    outcome = read_outcome(context, batch_id)
    total = Decimal(0)
    for line in outcome.output_lines:
        x_billing = line["x_billing"]
        usage = line["response"]["body"]["usage"]
        assert x_billing["currency"] == "usd" and x_billing["price_version"]
        assert x_billing["token_classes"] == {
            "cache_hit_input": usage["prompt_tokens_details"]["cached_tokens"],
            "cache_miss_input": usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"],
            "output": usage["completion_tokens"],
        }
        assert Decimal(x_billing["amount"]) == expected_amount(usage)
        total += Decimal(x_billing["amount"])
    with context.session_factory() as session:
        assert batch_cost_so_far(session, batch_id).amount == total


def test_a_budget_cap_skips_what_could_pass_it_and_bills_none_of_it(context: jobs.JobContext) -> None:
    lines = chat_lines(6)
    # Enough for about two requests' worst case (every prompt token a miss, max_tokens of output).
    batch_id = submit(context, lines, metadata={"max_cost": "0.00012"})
    assert drive(batch_id, context) is BatchStatus.COMPLETED
    outcome = read_outcome(context, batch_id)
    skipped = [line for line in outcome.error_lines if line["error"]["code"] == "skipped_budget"]
    assert outcome.output_lines and skipped
    assert len(outcome.output_lines) + len(skipped) == 6
    spent = sum(Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines)
    assert spent <= Decimal("0.00012")
    with context.session_factory() as session:
        billed = set(
            session.scalars(sa.select(UsageRecord.custom_id).where(UsageRecord.batch_id == batch_id))
        )
    assert billed == {line["custom_id"] for line in outcome.output_lines}
    assert not billed & {line["custom_id"] for line in skipped}


def test_a_bad_max_cost_fails_the_batch_without_running_it(context: jobs.JobContext) -> None:
    batch_id = submit(context, chat_lines(2), metadata={"max_cost": "lots"})
    assert drive(batch_id, context) is BatchStatus.FAILED
    outcome = read_outcome(context, batch_id)
    assert outcome.output_lines == []
    assert outcome.batch.errors[0]["param"] == "metadata.max_cost"


class WritesANul:
    """The real engine, but every answer holds a NUL character (a model may write one)."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def generate_stream(self, prompts, sampling_params, request_ids, should_stop=None):
        for output in self.llm.generate_stream(prompts, sampling_params, request_ids, should_stop):
            output.outputs[0].text = "before\x00after"
            yield output


def test_an_answer_with_a_nul_is_billed_and_read_back_like_any_other(
    sharded_context: jobs.JobContext, llm
) -> None:
    # On Postgres no json operator can read a line holding \u0000; the cost must not come from there.
    context = dataclasses.replace(sharded_context, load_llm=lambda: WritesANul(llm))
    batch_id = submit(context, chat_lines(4))
    assert drive(batch_id, context) is BatchStatus.COMPLETED  # two shards: the second opens the costing
    outcome = read_outcome(context, batch_id)
    assert [
        line["response"]["body"]["choices"][0]["message"]["content"] for line in outcome.output_lines
    ] == ["before\x00after"] * 4
    total = sum(Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines)
    with context.session_factory() as session:
        assert batch_cost_so_far(session, batch_id).amount == total
        start, end = utc_now() - timedelta(hours=1), utc_now() + timedelta(hours=1)
        rows = usage_rows(session, outcome.batch.account_id, start, end)
    assert sum(row.amount for row in rows) == total and {row.currency for row in rows} == {"usd"}


def test_the_ledger_holds_what_each_line_says_it_cost(context: jobs.JobContext) -> None:
    batch_id = submit(context, chat_lines(3))
    assert drive(batch_id, context) is BatchStatus.COMPLETED
    outcome = read_outcome(context, batch_id)
    by_custom_id = {record.custom_id: record for record in outcome.usage}
    for line in outcome.output_lines:
        record, x_billing = by_custom_id[line["custom_id"]], line["x_billing"]
        assert (record.amount, record.currency, record.price_version) == (
            Decimal(x_billing["amount"]),
            x_billing["currency"],
            x_billing["price_version"],
        )


def test_a_long_request_that_does_not_fit_does_not_hold_back_the_short_ones(context: jobs.JobContext) -> None:
    long_first = chat_line("long", "Tell me everything. " * 10, max_tokens=300)  # never fits the cap
    lines = [long_first, *chat_lines(8)]
    cap = Decimal("0.00008")
    batch_id = submit(context, lines, metadata={"max_cost": str(cap)})
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    ran = {line["custom_id"] for line in outcome.output_lines}
    skipped = {line["custom_id"] for line in outcome.error_lines if line["error"]["code"] == "skipped_budget"}
    assert "long" in skipped and ran  # the old rule stopped at the first that did not fit: 0 ran
    assert ran | skipped == {line["custom_id"] for line in lines} and not ran & skipped
    spent = sum(Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines)
    assert spent <= cap
    # Every request that was skipped could not have fit in what the cap had left at the end.
    with context.session_factory() as session:
        version = price_book(session, outcome.batch.account_id).at(utc_now())
        tokenizer = PromptTokenizer.from_checkpoint(context.settings.model)
        for line in lines:
            if line["custom_id"] not in skipped:
                continue
            generation, problems = check_body(
                line["body"], BatchEndpoint.CHAT_COMPLETIONS, "tiny-test", tokenizer
            )
            assert not problems
            worst = worst_case_cost(
                version, "tiny-test", len(generation.prompt_token_ids), generation.max_tokens
            )
            assert spent + worst > cap, line["custom_id"]

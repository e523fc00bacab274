"""A prepaid account's batch runs only what its credit covers: the rest are insufficient_credits error
lines, unbilled; each recorded request draws its x_billing amount in the transaction that records it.
A hard spend limit stops admission the same way (spend_limit_reached); a soft one raises an alert."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from billing.alerts import recent_alerts
from billing.credits.balance import credit_balance
from billing.credits.grants import grant_credits
from billing.limits.spend_limits import limit_states, set_limit
from billing.pricing.budget_cap import worst_case_cost
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule, price_book
from hybatch import accounts
from hybatch.models import BatchEndpoint, BatchStatus, CreditDraw, CreditHold, UsageRecord, utc_now
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.request_body import check_body
from tests.billing.schedule_docs import flat, model_entry, schedule, version
from tests.worker.jobs.batches import chat_lines, read_outcome, submit
from tests.worker.jobs.task_queue import drive
from worker import jobs

# Dear enough that a few cents cover only some requests: 4 output tokens cost up to 0.04.
PRICES = {"cache_hit_input": flat("10"), "cache_miss_input": flat("100"), "output": flat("10000")}


def _prepaid_account(context: jobs.JobContext, amount: str | None) -> str:
    """acme on the dear schedule, with a grant of ``amount`` (None: no grant)."""
    with context.session_factory() as session:
        account = accounts.create_account(session, "acme")
        load_schedule(
            session, parse_schedule(schedule("dear", version("v1", "2026-01-01", [model_entry("*", PRICES)])))
        )
        assign_schedule(session, account.id, "dear", utc_now())
        if amount is not None:
            grant_credits(session, account.id, amount=Decimal(amount), currency="usd")
        session.commit()
        return account.id


def _worst_cases(context: jobs.JobContext, account_id: str, lines: list[dict]) -> dict[str, Decimal]:
    tokenizer = PromptTokenizer.from_checkpoint(context.settings.model)
    with context.session_factory() as session:
        version_now = price_book(session, account_id).at(utc_now())
    worst = {}
    for line in lines:
        generation, problems = check_body(
            line["body"], BatchEndpoint.CHAT_COMPLETIONS, "tiny-test", tokenizer
        )
        assert not problems
        worst[line["custom_id"]] = worst_case_cost(
            version_now, "tiny-test", len(generation.prompt_token_ids), generation.max_tokens
        )
    return worst


def test_a_prepaid_batch_runs_what_the_credit_covers_and_bills_none_of_the_rest(
    context: jobs.JobContext,
) -> None:
    account_id = _prepaid_account(context, "0.10")
    lines = chat_lines(8)
    worst = _worst_cases(context, account_id, lines)
    assert sum(worst.values()) > Decimal("0.10")  # not all of them can fit
    batch_id = submit(context, lines)
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    ran = {line["custom_id"]: Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines}
    refused = {
        line["custom_id"] for line in outcome.error_lines if line["error"]["code"] == "insufficient_credits"
    }
    assert ran and refused and set(ran) | refused == set(worst) and not set(ran) & refused
    with context.session_factory() as session:
        billed = set(
            session.scalars(sa.select(UsageRecord.custom_id).where(UsageRecord.batch_id == batch_id))
        )
        drawn = dict(
            session.execute(
                sa.select(CreditDraw.custom_id, CreditDraw.amount).where(CreditDraw.batch_id == batch_id)
            ).all()
        )
        holds = session.scalar(sa.select(sa.func.count()).select_from(CreditHold))
        state = credit_balance(session, account_id)
    assert billed == set(ran) and drawn == ran  # each recorded request drew exactly what its line says
    assert holds == 0
    assert state.balance == Decimal("0.10") - sum(ran.values()) >= 0  # never past the balance
    # Every refused request could not have fitted in what was left at the end.
    assert all(worst[custom_id] > state.balance for custom_id in refused)


def test_a_hard_spend_limit_stops_admission_and_a_soft_one_alerts(context: jobs.JobContext) -> None:
    account_id = _prepaid_account(context, None)
    with context.session_factory() as session:
        set_limit(
            session, account_id, api_key_id=None, soft=Decimal("0.01"), hard=Decimal("0.10"), currency="usd"
        )
        session.commit()
    lines = chat_lines(8)
    worst = _worst_cases(context, account_id, lines)
    batch_id = submit(context, lines)
    assert drive(batch_id, context) is BatchStatus.COMPLETED

    outcome = read_outcome(context, batch_id)
    ran = {line["custom_id"]: Decimal(line["x_billing"]["amount"]) for line in outcome.output_lines}
    refused = {
        line["custom_id"] for line in outcome.error_lines if line["error"]["code"] == "spend_limit_reached"
    }
    assert ran and refused and set(ran) | refused == set(worst)
    with context.session_factory() as session:
        [state] = limit_states(session, account_id, None)
        alerts = [alert.kind for alert in recent_alerts(session, account_id)]
        holds = session.scalar(sa.select(sa.func.count()).select_from(CreditHold))
    assert state.spent == sum(ran.values()) <= Decimal("0.10") and holds == 0
    assert all(state.spent + worst[custom_id] > Decimal("0.10") for custom_id in refused)
    assert alerts == ["spend_limit.soft_reached"]

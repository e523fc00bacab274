"""Per-request marginal cost (x_billing) and a batch's cost so far, on SQLite and Postgres."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from billing.pricing.request_cost import X_BILLING, batch_cost_so_far, price_request
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from hybatch.batch_results import record_failure, record_success
from hybatch.models import Batch
from hybatch.result_lines import LinePrice, TokenUsage, error_line
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version

D = Decimal


def _small_tiers(session: Session, account_id: str) -> None:
    """Output: 2.00 per 1M up to 1000 tokens a month, then 1.00; input flat; long prompts > 100."""
    tiers = {
        "cache_hit_input": flat("0.5"),
        "cache_miss_input": flat("1"),
        "output": table("graduated", (1000, "2"), (None, "1")),
    }
    volume = {**tiers, "output": table("volume", (1000, "2"), (None, "1"))}
    doc = schedule(
        "small",
        version("v1", "2026-01-01", [model_entry("vol", volume), model_entry("*", tiers)], long_from=100),
    )
    load_schedule(session, parse_schedule(doc))
    assign_schedule(session, account_id, "small", at("2026-01-01 00:00"))


def test_default_price_and_x_billing_shape(session: Session) -> None:
    customer = add_customer(session)
    cost = price_request(
        session,
        account_id=customer.account_id,
        model="tiny-test",
        usage=TokenUsage(cache_hit_input_tokens=1000, cache_miss_input_tokens=200, output_tokens=50),
        at=at("2026-03-10 12:00"),
    )
    # 1000 * 0.07/1M + 200 * 0.70/1M + 50 * 2.10/1M = 0.00007 + 0.00014 + 0.000105
    assert cost.as_x_billing() == {
        "token_classes": {"cache_hit_input": 1000, "cache_miss_input": 200, "output": 50},
        "amount": "0.000315",
        "currency": "usd",
        "price_version": "default@2025-01",
    }


def test_marginal_cost_follows_month_to_date_volume(session: Session) -> None:
    customer = add_customer(session)
    other = add_customer(session, "other")
    _small_tiers(session, customer.account_id)
    usage = TokenUsage(cache_hit_input_tokens=0, cache_miss_input_tokens=10, output_tokens=400)

    def cost(when: str, model: str = "m", account_id: str = customer.account_id) -> Decimal:
        return price_request(session, account_id=account_id, model=model, usage=usage, at=at(when)).amount

    # nothing this month yet: 10 * 1 + 400 * 2 (per 1M)
    assert cost("2026-03-10 12:00") == D("0.00081")
    add_usage(session, customer, at("2026-02-28 23:59"), miss=10, out=5000, model="m")  # last month
    add_usage(session, other, at("2026-03-01 00:00"), miss=10, out=5000, model="m")  # another account
    add_usage(session, customer, at("2026-03-01 00:00"), miss=10, out=5000, model="n")  # another model
    add_usage(session, customer, at("2026-03-02 00:00"), miss=200, out=5000, model="m")  # long prompt
    add_usage(session, customer, at("2026-03-03 00:00"), miss=10, out=800, model="m")
    assert cost("2026-03-03 00:00") == D("0.00081")  # strictly before `at` only
    # 800 already this month: 200 more at 2.00 then 200 at 1.00
    assert cost("2026-03-10 12:00") == D("0.00001") + D("0.0004") + D("0.0002")
    # volume mode: month-to-date 800 + 400 = 1200 > 1000, so all 400 at 1.00
    add_usage(session, customer, at("2026-03-03 00:00"), miss=10, out=800, model="vol")
    assert cost("2026-03-10 12:00", model="vol") == D("0.00001") + D("0.0004")


def test_batch_cost_so_far_sums_the_recorded_lines(session: Session) -> None:
    customer = add_customer(session)
    batch = session.get(Batch, customer.batch_id)
    assert batch_cost_so_far(session, batch.id).amount == 0
    for index, amount in enumerate(["0.000315", "0.1", "0.0000005"]):
        line = {"id": f"r{index}", "custom_id": f"c{index}", "response": {}, "error": None}
        line[X_BILLING] = {"token_classes": {}, "amount": amount, "currency": "usd", "price_version": "v"}
        usage = TokenUsage(cache_hit_input_tokens=1, cache_miss_input_tokens=1, output_tokens=1)
        price = LinePrice(Decimal(amount), "usd", "v")
        record_success(
            session, batch, custom_id=f"c{index}", line_number=index + 1, line=line, usage=usage, price=price
        )
    unpriced = {"id": "r9", "custom_id": "c9", "response": {}, "error": None}
    usage = TokenUsage(cache_hit_input_tokens=1, cache_miss_input_tokens=1, output_tokens=1)
    record_success(session, batch, custom_id="c9", line_number=9, line=unpriced, usage=usage)
    failed = error_line("c10", code="batch_expired", message="expired")
    record_failure(session, batch, custom_id="c10", line_number=10, line=failed)
    session.flush()
    cost = batch_cost_so_far(session, batch.id)
    assert (cost.amount, cost.currency, cost.priced_requests, cost.unpriced_requests) == (
        D("0.1003155"),
        "usd",
        3,
        1,
    )

"""Price preview: cache hits predicted from the file's own prompt tree, min/expected/max cost."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from billing.pricing.cost_estimate import PreviewRequest, estimate, estimate_for_account, predict_cache_hits
from billing.pricing.schedule_version import TokenClass
from tests.billing.books import book_of, one_version
from tests.billing.ledger import add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, table, version

D = Decimal


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_hits_come_from_earlier_requests_of_the_file() -> None:
    shared = tokens(32)
    assert predict_cache_hits([tokens(40)]) == [0]
    assert predict_cache_hits([shared + [100] * 8, shared + [200] * 8]) == [0, 32]
    # a 20-token shared prefix: only the full first block can hit
    assert predict_cache_hits([tokens(20) + [1] * 20, tokens(20) + [2] * 20]) == [0, 16]
    # different first blocks: nothing shared
    assert predict_cache_hits([tokens(40), tokens(40, start=1)]) == [0, 0]


def test_depth_first_order_and_the_last_token_rule() -> None:
    long, short = tokens(50), tokens(32)
    # the worker runs the 32-token prompt first (it ends where the long one branches on)
    assert predict_cache_hits([long, short]) == [32, 0]
    # identical prompts: the copy hits every full block before its last token
    assert predict_cache_hits([tokens(33), tokens(33)]) == [0, 32]
    assert predict_cache_hits([tokens(32), tokens(32)]) == [0, 16]
    assert predict_cache_hits([[], tokens(1)]) == [0, 0]


def test_min_expected_max_cost() -> None:
    prices = {"cache_hit_input": flat("0.1"), "cache_miss_input": flat("1"), "output": flat("4")}
    book = book_of(version("v1", "2026-01-01", [model_entry("*", prices)], long_from=1000))
    requests = [PreviewRequest(tokens(40), 10), PreviewRequest(tokens(32) + [9] * 8, 5)]
    result = estimate(requests, book.at(at("2026-03-01 00:00")), "m")
    # hits 32, misses 48; output min 2, expected 5 + 3 = 8, max 15
    assert (result.cache_hit_input_tokens, result.cache_miss_input_tokens) == (32, 48)
    assert result.output_tokens == {"min": 2, "expected": 8, "max": 15}
    base = D(32) * D("0.1") / 1_000_000 + D(48) / 1_000_000
    assert result.cost == {
        "min": base + D(2 * 4) / 1_000_000,
        "expected": base + D(8 * 4) / 1_000_000,
        "max": base + D(15 * 4) / 1_000_000,
    }
    assert result.as_dict()["cost"]["max"] == "0.0001112"
    assert result.as_dict()["token_classes"]["output"] == {"min": 2, "expected": 8, "max": 15}


def test_month_to_date_volume_moves_the_tier(session: Session) -> None:
    customer = add_customer(session)
    graduated = table("graduated", (100, "2"), (None, "1"))
    book = book_of(one_version(graduated))
    requests = [PreviewRequest(tokens(10), 50)]
    fresh = estimate(requests, book.at(at("2026-03-01 00:00")), "m")
    after = estimate(requests, book.at(at("2026-03-01 00:00")), "m", {("short", TokenClass.OUTPUT): 80})
    assert fresh.cost["max"] - after.cost["max"] == D(30) / 1_000_000  # 30 output tokens moved to tier 2
    # against the database: the default schedule and this month's usage
    add_usage(session, customer, at("2026-03-02 00:00"), miss=10, out=10)
    estimated = estimate_for_account(
        session, customer.account_id, "tiny-test", requests, at("2026-03-05 00:00")
    )
    assert estimated.price_version == "default@2025-01"
    assert estimated.cost["max"] == D(10) * D("0.70") / 1_000_000 + D(50) * D("2.10") / 1_000_000

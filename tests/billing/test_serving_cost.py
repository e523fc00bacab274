"""What a token costs to serve, against hand-computed figures: per class and tier, utilization,
margins of the shipped default schedule (one below cost), validation, the command."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from billing.pricing.schedule_parser import parse_schedule, read_schedule_file
from billing.pricing.schedule_store import DEFAULT_SCHEDULE_FILE, assign_schedule, load_schedule
from billing.pricing.schedule_version import TokenClass, UnpricedModelError
from billing.pricing.serving_cost import margins, round_per_1m, serving_cost
from billing.pricing.serving_cost_report import serving_cost_report
from billing.pricing.serving_inputs import (
    MEASURED_SERVING_FILE,
    CacheTier,
    ServingInputsInvalidError,
    read_serving_document,
    serving_inputs,
)
from hybatch import cli
from tests.billing.ledger import add_customer, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version

D = Decimal
HIT, MISS, OUT = TokenClass.CACHE_HIT_INPUT, TokenClass.CACHE_MISS_INPUT, TokenClass.OUTPUT

# $2.50 an hour; 6,250 prompt tokens/s, 1,000 output tokens/s; hits at 250,000 / 125,000 / 50,000
# tokens/s from device / host / disk, 90% / 8% / 2% of them.
FIGURES = {
    "hardware": "test GPU",
    "measured": "by hand",
    "currency": "usd",
    "hourly_price": "2.50",
    "utilization": "1",
    "prefill_tokens_per_s": "6250",
    "decode_tokens_per_s": "1000",
    "cache_hit_tokens_per_s": {"device": "250000", "host": "125000", "disk": "50000"},
    "cache_hit_shares": {"device": "0.90", "host": "0.08", "disk": "0.02"},
}
# By hand, per 1M tokens: 2.5 x 1M / (3,600 x tokens per second).
#   miss   2.5e6 / 22.5e6 = 1/9             = 0.111111 (0.1111...)
#   output 2.5e6 / 3.6e6  = 25/36           = 0.694444 (0.69444...)
#   device 1/360 = 0.002778, host 1/180 = 0.005556, disk 1/72 = 0.013889
#   hit    0.9/360 + 0.08/180 + 0.02/72 = 1/400 + 1/2250 + 1/3600 = 0.003222 (0.0032222...)
COSTS = {MISS: D("0.111111"), OUT: D("0.694444"), HIT: D("0.003222")}
TIER_COSTS = {CacheTier.DEVICE: D("0.002778"), CacheTier.HOST: D("0.005556"), CacheTier.DISK: D("0.013889")}


def test_costs_per_class_and_tier_by_hand() -> None:
    cost = serving_cost(serving_inputs(FIGURES))
    assert {c: cost.per_1m(c) for c in TokenClass} == COSTS
    assert {t: cost.hit_per_1m(t) for t in CacheTier} == TIER_COSTS
    # carried to 60 digits: 1/9 and 29/9000 (= 0.9/360 + 0.08/180 + 0.02/72) to within 1e-59
    assert abs(cost.exact(MISS) * 9 - 1) < D("1e-59") and abs(cost.exact(HIT) * 9000 - 29) < D("1e-55")
    assert cost.cost_per_hour_served == D("2.500000")


def test_half_utilization_doubles_every_cost() -> None:
    cost = serving_cost(serving_inputs({**FIGURES, "utilization": "0.5"}))
    # 2/9 = 0.2222..., 25/18 = 1.38888..., 29/4500 = 0.0064444...
    assert {c: cost.per_1m(c) for c in TokenClass} == {
        MISS: D("0.222222"),
        OUT: D("1.388889"),
        HIT: D("0.006444"),
    }
    assert cost.cost_per_hour_served == D("5.000000")


def test_rounding_is_half_up_once() -> None:
    assert round_per_1m(D("0.0000005")) == D("0.000001")  # a tie rounds up
    assert round_per_1m(D("-0.0000005")) == D("-0.000001")  # away from zero, as money rounds
    assert round_per_1m(D("0.00000049")) == D("0.000000")
    # a tie reached by division stays a tie: $0.0018 an hour at 1,000,000 tokens/s is 0.0000005 per 1M
    cost = serving_cost(
        serving_inputs({**FIGURES, "hourly_price": "0.0018", "prefill_tokens_per_s": "1000000"})
    )
    assert cost.exact(MISS) == D("0.0000005") and cost.per_1m(MISS) == D("0.000001")


def _default_version():
    return read_schedule_file(DEFAULT_SCHEDULE_FILE).versions[0]


def test_margins_of_the_default_schedule_by_hand() -> None:
    rows = margins(serving_cost(serving_inputs(FIGURES)), _default_version(), "hybatch-tiny")  # the "*" entry
    short = [r for r in rows if r.context_tier == "upto_256k"]
    got = [(r.token_class, r.first_token, r.price, r.cost, r.margin, r.margin_share) for r in short]
    assert got == [
        # 0.07 - 0.0032222... = 0.0667777...; / 0.07 = 0.95397
        (HIT, 1, D("0.07"), D("0.003222"), D("0.066778"), D("0.9540")),
        (HIT, 1_000_000_001, D("0.056"), D("0.003222"), D("0.052778"), D("0.9425")),
        # 0.70 - 1/9 = 0.5888...; / 0.70 = 0.84127
        (MISS, 1, D("0.70"), D("0.111111"), D("0.588889"), D("0.8413")),
        (MISS, 1_000_000_001, D("0.56"), D("0.111111"), D("0.448889"), D("0.8016")),
        # 2.10 - 25/36 = 1.405555...; / 2.10 = 0.66931
        (OUT, 1, D("2.10"), D("0.694444"), D("1.405556"), D("0.6693")),
        (OUT, 1_000_000_001, D("1.68"), D("0.694444"), D("0.985556"), D("0.5866")),
    ]
    assert len(rows) == 12 and {r.prompt_tokens_up_to for r in rows} == {262_144, None}


def test_a_price_below_cost_has_a_negative_margin() -> None:
    slow = serving_cost(serving_inputs({**FIGURES, "decode_tokens_per_s": "100"}))
    [first] = [
        r for r in margins(slow, _default_version(), "x") if r.token_class is OUT and r.first_token == 1
    ][:1]
    # 2.10 - 250/36 = 2.10 - 6.94444... = -4.84444...; / 2.10 = -2.30688
    assert (first.cost, first.margin, first.margin_share) == (D("6.944444"), D("-4.844444"), D("-2.3069"))


def test_every_problem_is_reported_at_once() -> None:
    bad = {
        **FIGURES,
        "currency": "xyz",
        "hourly_price": "-1",
        "utilization": "1.5",
        "prefill_tokens_per_s": "0",
        "decode_tokens_per_s": "fast",
        "cache_hit_tokens_per_s": {"device": "1", "host": "1", "tape": "1"},
        "cache_hit_shares": {"device": "0.5", "host": "0.3", "disk": "0.1"},
    }
    with pytest.raises(ServingInputsInvalidError) as caught:
        serving_inputs(bad)
    assert caught.value.problems == [
        "currency: 'xyz' is not one of aud, cad, chf, cny, eur, gbp, hkd, inr, jpy, krw, sgd, usd",
        "hourly_price: must be at least 0, not -1",
        "utilization: must be at most 1, not 1.5",
        "prefill_tokens_per_s: must be above 0, not 0",
        "decode_tokens_per_s: 'fast' is not a decimal number",
        "cache_hit_tokens_per_s: unknown tiers ['tape'] (device, host, disk)",
        "cache_hit_tokens_per_s.disk: missing",
        "cache_hit_shares: must add up to 1, not 0.9",
    ]


def test_the_shipped_figures_are_valid() -> None:
    inputs = serving_inputs(read_serving_document(MEASURED_SERVING_FILE))
    assert inputs.currency == "usd" and "no GPU" in inputs.hardware
    assert sum(inputs.cache_hit_shares.values()) == 1


def test_json_inputs_read_as_decimals(tmp_path: Path) -> None:
    path = tmp_path / "h200.json"
    path.write_text('{"hourly_price": 0.1, "prefill_tokens_per_s": 3}', encoding="utf-8")
    assert read_serving_document(path) == {"hourly_price": D("0.1"), "prefill_tokens_per_s": 3}
    (tmp_path / "bad.yaml").write_text("- a list", encoding="utf-8")
    with pytest.raises(ServingInputsInvalidError, match="must hold a mapping"):
        read_serving_document(tmp_path / "bad.yaml")


runner = CliRunner()


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> str:
    monkeypatch.setenv("HYBATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HYBATCH_DATABASE_URL", sqlite_url)
    return sqlite_url


def test_the_command_states_inputs_costs_and_margins(cli_database: str) -> None:
    args = [
        "billing",
        "serving-cost",
        "--gpu-hourly",
        "2.50",
        "--prefill-tps",
        "6250",
        "--decode-tps",
        "1000",
    ]
    args += [
        "--hit-tps",
        "device=250000,host=125000,disk=50000",
        "--hit-shares",
        "device=0.90,host=0.08,disk=0.02",
    ]
    result = runner.invoke(cli.app, [*args, "--model", "hybatch-tiny"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        "given: hourly_price, prefill_tokens_per_s, decode_tokens_per_s, cache_hit_tokens_per_s, "
        "cache_hit_shares)" in out
    )
    # The file's hardware and measurement are said to be the file's: the given figures are not.
    assert out.count("(the file's; the figures marked given are not from it)") == 2
    assert "disk 50,000 tokens/s × 0.02  (given: tokens/s and shares)" in out
    assert "cache-miss input  0.111111" in out and "output            0.694444" in out
    assert "cache-hit input   0.003222  (by tier: device 0.002778, host 0.005556, disk 0.013889)" in out
    assert "margins of default@2025-01 for hybatch-tiny (its entry '*')" in out
    assert "output            first 1B   price $2.10      cost $0.694444  margin $1.405556  66.9%" in out
    shipped = runner.invoke(cli.app, ["billing", "serving-cost"]).output
    assert "all from the file" in shipped and "(given" not in shipped and "the file's" not in shipped
    bad = runner.invoke(cli.app, ["billing", "serving-cost", "--utilization", "2", "--hit-tps", "device=0"])
    assert bad.exit_code == 1
    assert "utilization: must be at most 1, not 2" in bad.output
    assert "cache_hit_tokens_per_s.device: must be above 0, not 0" in bad.output
    typo = runner.invoke(cli.app, ["billing", "serving-cost", "--hit-tps", "gpu=5"])
    assert typo.exit_code == 1 and "cache_hit_tokens_per_s: 'gpu=5' is not TIER=NUMBER" in typo.output


def test_an_accounts_schedule_prices_the_margins(session: Session) -> None:
    prices = {"cache_hit_input": flat("0.002"), "cache_miss_input": flat("0.5"), "output": flat("0.6")}
    load_schedule(
        session, parse_schedule(schedule("cheap", version("v1", "2026-01-01", [model_entry("m", prices)])))
    )
    customer = add_customer(session, "cheapskate")
    assign_schedule(session, customer.account_id, "cheap", at("2026-01-01 00:00"))
    report = serving_cost_report(
        session, FIGURES, {}, account_id=customer.account_id, model="m", at=at("2026-03-01 00:00")
    )
    assert (report.price_version, report.priced_by, report.overridden) == ("cheap@v1", "m", ())
    short = {r.token_class: (r.margin, r.margin_share) for r in report.margins if r.context_tier == "short"}
    assert short == {
        HIT: (D("-0.001222"), D("-0.6111")),  # 0.002 - 0.0032222... = -0.0012222...; / 0.002
        MISS: (D("0.388889"), D("0.7778")),  # 0.5 - 1/9 = 0.38888...; / 0.5
        OUT: (D("-0.094444"), D("-0.1574")),  # 0.6 - 25/36 = -0.094444...; / 0.6 = -0.157407
    }
    with pytest.raises(UnpricedModelError):
        serving_cost_report(
            session, FIGURES, {}, account_id=customer.account_id, model="other", at=at("2026-03-01 00:00")
        )

"""Schedule files: the shipped default parses; every problem of a bad file is reported at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.pricing.schedule_parser import (
    ScheduleInvalidError,
    parse_schedule,
    parse_schedule_text,
    read_schedule_file,
)
from billing.pricing.schedule_store import DEFAULT_SCHEDULE_FILE
from billing.pricing.schedule_version import TierMode, TokenClass, UnpricedModelError
from billing.pricing.version_document import version_document, version_from_document
from tests.billing.schedule_docs import flat, model_entry, schedule, table, version


def test_default_schedule_is_shaped_like_mimo() -> None:
    default = read_schedule_file(DEFAULT_SCHEDULE_FILE)
    assert default.schedule == "default" and default.currency == "usd"
    (current,) = default.versions
    for model in ("tiny-test", "mimo-v2-flash", "mimo-v2.5-pro"):
        for context in current.context_tiers:
            prices = {c: current.table(model, context.name, c).tiers[0].unit_price for c in TokenClass}
            hit, miss, out = (prices[c] for c in TokenClass)
            assert hit <= miss / 5 and out > miss  # hits a small fraction of a miss, output dearest
            assert len(current.table(model, context.name, TokenClass.OUTPUT).tiers) >= 2  # a volume discount
    assert current.table("tiny-test", "upto_256k", TokenClass.CACHE_MISS_INPUT).tiers[
        0
    ].unit_price == Decimal("0.70")
    assert current.context_tier_for(262_144).name == "upto_256k"
    assert current.context_tier_for(262_145).name == "over_256k"
    assert current.prices_for("mimo-v2.5-pro").match == "mimo-v2.5-pro"  # exact beats the "*" pattern
    assert current.table("mimo-v2.5-pro", "upto_256k", TokenClass.OUTPUT).mode is TierMode.VOLUME


def test_yaml_prices_never_pass_through_float() -> None:
    text = """
schedule: s
currency: usd
versions:
  - version: v1
    effective_from: 2026-01-01
    context_tiers: [{name: all, up_to_prompt_tokens: null}]
    models:
      - match: "*"
        prices:
          all:
            cache_hit_input: {mode: graduated, tiers: [{up_to: null, per_1m: 0.1}]}
            cache_miss_input: {mode: graduated, tiers: [{up_to: null, per_1m: "0.30"}]}
            output: {mode: volume, tiers: [{up_to: 1_000, per_1m: 3}, {up_to: null, per_1m: 2.000001}]}
"""
    (parsed,) = parse_schedule_text(text).versions
    assert parsed.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert parsed.table("m", "all", TokenClass.CACHE_HIT_INPUT).tiers[0].unit_price == Decimal("0.1")
    output = parsed.table("m", "all", TokenClass.OUTPUT)
    assert [t.up_to for t in output.tiers] == [1000, None]
    assert output.tiers[1].unit_price == Decimal("2.000001")
    assert all(type(t.unit_price) is Decimal for t in output.tiers)


def test_document_round_trip() -> None:
    (current,) = read_schedule_file(DEFAULT_SCHEDULE_FILE).versions
    stored = json.loads(json.dumps(version_document(current)))
    assert version_from_document(stored) == current


def test_every_problem_is_reported_at_once() -> None:
    bad_prices = {
        "cache_hit_input": table("tiered", (None, "0.1")),  # unknown mode
        "cache_miss_input": table("graduated", (100, "1"), (100, "0.9"), (None, "0.8")),  # not increasing
        "output": table("volume", (100, "2"), (200, "1.5")),  # last tier not open-ended
        "cache_read_input": flat("0.1"),  # unknown token class
    }
    document = schedule(
        "s",
        version("v1", "2026-01-01T00:00:00Z", [model_entry("*", bad_prices)]),
        version(
            "v2",
            "2026-01-01T00:00:00Z",  # overlaps v1
            [model_entry("m", {"cache_hit_input": flat("-0.1"), "cache_miss_input": flat("0.1234567")})],
        ),
        currency="xyz",
    )
    with pytest.raises(ScheduleInvalidError) as raised:
        parse_schedule(document)
    messages = [str(problem) for problem in raised.value.problems]
    expected = [
        "currency: unknown currency 'xyz'",
        "versions[0].models[0].prices.short.cache_hit_input.mode: unknown mode 'tiered'",
        "versions[0].models[0].prices.short.cache_miss_input.tiers[1].up_to: bounds must increase",
        "versions[0].models[0].prices.short.output.tiers[1].up_to: the last tier must be open-ended",
        "versions[0].models[0].prices.short.cache_read_input: unknown key",
        "versions[1].models[0].prices.short.cache_hit_input.tiers[0].per_1m: negative price -0.1",
        "versions[1].models[0].prices.short.cache_miss_input.tiers[0].per_1m: at most 6 decimal places",
        "versions[1].models[0].prices.short.output: is required",
    ]
    for start in expected:
        assert any(message.startswith(start) for message in messages), (start, messages)
    # both context tiers' problems are reported, not only the first one's
    assert any(m.startswith("versions[0].models[0].prices.long.cache_hit_input.mode") for m in messages)
    assert "invalid price schedule" in raised.value.message and raised.value.code == "invalid_schedule"


def test_overlapping_and_structural_problems() -> None:
    models = [model_entry("*", {c: flat("1") for c in ("cache_hit_input", "cache_miss_input", "output")})]
    document = schedule(
        "Bad Name",
        version("v1", "2026-02-01T00:00:00Z", models),
        version("v1", "2026-01-01", models),  # duplicate label, earlier start
        {"version": "v3", "effective_from": "2026-03-01T00:00:00", "context_tiers": [], "models": models},
    )
    document["extra"] = True
    with pytest.raises(ScheduleInvalidError) as raised:
        parse_schedule(document)
    messages = [str(problem) for problem in raised.value.problems]
    for start in (
        "extra: unknown key",
        "schedule: must be a lowercase name",
        "versions[1].version: duplicate version 'v1'",
        "versions[1].effective_from: overlaps version 'v1'",
        "versions[2].effective_from: a date-time must carry its time zone",
        "versions[2].context_tiers: must be a non-empty list",
    ):
        assert any(message.startswith(start) for message in messages), (start, messages)


def test_context_tiers_need_increasing_bounds_and_an_open_end() -> None:
    models = [model_entry("*", {c: flat("1") for c in ("cache_hit_input", "cache_miss_input", "output")})]
    bad = version("v1", "2026-01-01", models)
    bad["context_tiers"] = [
        {"name": "short", "up_to_prompt_tokens": 0},
        {"name": "long", "up_to_prompt_tokens": 500},
    ]
    with pytest.raises(ScheduleInvalidError) as raised:
        parse_schedule(schedule("s", bad))
    messages = [str(problem) for problem in raised.value.problems]
    assert "versions[0].context_tiers[0].up_to_prompt_tokens: must be a positive whole number" in messages[0]
    assert any(
        "context_tiers[1].up_to_prompt_tokens: the last context tier must be open-ended" in m
        for m in messages
    )


def test_json_files_and_unpriced_models(tmp_path) -> None:
    prices = {c: flat("1.5") for c in ("cache_hit_input", "cache_miss_input", "output")}
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(schedule("s", version("v1", "2026-01-01T00:00:00+00:00", [model_entry("a-*", prices)])))
    )
    (parsed,) = read_schedule_file(path).versions
    assert parsed.table("a-1", "short", TokenClass.OUTPUT).tiers[0].unit_price == Decimal("1.5")
    with pytest.raises(UnpricedModelError):
        parsed.prices_for("b")
    with pytest.raises(ScheduleInvalidError):
        parse_schedule_text("{not json", is_json=True)

"""Price books built in memory for rating tests (no database)."""

from __future__ import annotations

from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import DEFAULT_SCHEDULE, PriceBook
from tests.billing.schedule_docs import model_entry, schedule, version

ALL_CLASSES = ("cache_hit_input", "cache_miss_input", "output")


def book_of(*versions: dict, name: str = DEFAULT_SCHEDULE, currency: str = "usd") -> PriceBook:
    parsed = parse_schedule(schedule(name, *versions, currency=currency))
    return PriceBook("acct", [], {name: list(parsed.versions)})


def same_table_for_all(table: dict, match: str = "*") -> dict:
    return model_entry(match, {c: table for c in ALL_CLASSES})


def one_version(table: dict, label: str = "v1", start: str = "2026-01-01", **kwargs) -> dict:
    return version(label, start, [same_table_for_all(table)], **kwargs)

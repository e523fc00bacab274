"""Small schedule documents for tests: flat or tiered tables, built as plain dicts."""

from __future__ import annotations

from typing import Any

CLASSES = ("cache_hit_input", "cache_miss_input", "output")


def table(mode: str = "graduated", *tiers: tuple[int | None, str]) -> dict[str, Any]:
    return {"mode": mode, "tiers": [{"up_to": up_to, "per_1m": price} for up_to, price in tiers]}


def flat(price: str) -> dict[str, Any]:
    return table("graduated", (None, price))


def model_entry(match: str, prices: dict[str, dict[str, Any]], context_tiers=("short", "long")) -> dict:
    """``prices`` maps token class -> table; the same tables for every context tier unless nested."""
    if not set(prices) & set(context_tiers):
        prices = {tier: prices for tier in context_tiers}
    return {"match": match, "prices": prices}


def version(label: str, effective_from: str, models: list[dict], long_from: int = 1000) -> dict[str, Any]:
    return {
        "version": label,
        "effective_from": effective_from,
        "context_tiers": [
            {"name": "short", "up_to_prompt_tokens": long_from},
            {"name": "long", "up_to_prompt_tokens": None},
        ],
        "models": models,
    }


def schedule(name: str, *versions: dict[str, Any], currency: str = "usd") -> dict[str, Any]:
    return {"schedule": name, "currency": currency, "versions": list(versions)}

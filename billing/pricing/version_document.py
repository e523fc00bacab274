"""A schedule version as a JSON-ready document (prices as decimal strings): what the database keeps."""

from __future__ import annotations

from typing import Any

from billing.money import decimal_string
from billing.pricing.schedule_parser import VERSION_KEYS, parse_schedule
from billing.pricing.schedule_version import ScheduleVersion, TierTable, TokenClass


def version_from_document(document: dict[str, Any]) -> ScheduleVersion:
    """Rebuild a version from ``version_document`` output (as stored in the database)."""
    data = {
        "schedule": document["schedule"],
        "currency": document["currency"],
        "versions": [{key: document[key] for key in VERSION_KEYS}],
    }
    return parse_schedule(data).versions[0]


def version_document(version: ScheduleVersion) -> dict[str, Any]:
    """A JSON-ready document of one version (prices as decimal strings): what the database keeps."""
    return {
        "schedule": version.schedule,
        "currency": version.currency,
        "version": version.version,
        "effective_from": version.effective_from.isoformat(),
        "context_tiers": [
            {"name": tier.name, "up_to_prompt_tokens": tier.up_to_prompt_tokens}
            for tier in version.context_tiers
        ],
        "models": [
            {
                "match": entry.match,
                "prices": {
                    context.name: {
                        token_class.value: _table_document(entry.tables[(context.name, token_class)])
                        for token_class in TokenClass
                    }
                    for context in version.context_tiers
                },
            }
            for entry in version.models
        ],
    }


def _table_document(table: TierTable) -> dict[str, Any]:
    return {
        "mode": table.mode.value,
        "tiers": [{"up_to": tier.up_to, "per_1m": decimal_string(tier.unit_price)} for tier in table.tiers],
    }

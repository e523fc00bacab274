"""The measured figures a token's serving cost is computed from, as validated frozen data.

An operator states them in a small YAML or JSON file (``hybatch billing serving-cost --inputs
FILE``; the shipped ``measured_serving.yaml`` holds what the benchmarks measured on the
development machine) or overrides single figures on the command line or the dashboard's form.
Every figure is a ``Decimal`` read from its text, never a float; validation reports every problem
at once.

- ``hourly_price``: what one serving unit (a GPU, or the machine measured) costs per hour, in
  ``currency``; ``utilization``: the share of paid hours it spends serving, in (0, 1].
- ``prefill_tokens_per_s``: prompt tokens it computes per second (cache misses), at batch sizes a
  batch service runs; ``decode_tokens_per_s``: output tokens it generates per second, likewise.
- ``cache_hit_tokens_per_s``: cached prompt tokens it serves per second from each tier (device,
  host, disk): a hit costs reading the prefix's KV instead of computing it.
- ``cache_hit_shares``: the share of cache-hit tokens each tier serves (they add up to 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from billing.money import MINOR_UNIT_EXPONENTS
from hybatch.errors import InvalidRequestError

MEASURED_SERVING_FILE = Path(__file__).resolve().parent / "measured_serving.yaml"


class CacheTier(StrEnum):
    DEVICE = "device"
    HOST = "host"
    DISK = "disk"


@dataclass(frozen=True)
class ServingInputs:
    hardware: str  # what was measured: "1x H200", "2 vCPU dev VM, no GPU"
    measured: str  # how and when: the bench commands and the date
    currency: str
    hourly_price: Decimal  # per serving unit per hour, in ``currency``
    utilization: Decimal  # (0, 1]: share of paid hours spent serving
    prefill_tokens_per_s: Decimal
    decode_tokens_per_s: Decimal
    cache_hit_tokens_per_s: Mapping[CacheTier, Decimal]  # every tier
    cache_hit_shares: Mapping[CacheTier, Decimal]  # every tier; they add up to exactly 1


class ServingInputsInvalidError(InvalidRequestError):
    """The figures failed validation; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"invalid serving-cost inputs ({len(problems)} problems):\n{lines}", code="invalid_inputs"
        )


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as exact ``Decimal`` values from their text."""


_DecimalLoader.add_constructor(
    "tag:yaml.org,2002:float",
    lambda loader, node: Decimal(loader.construct_scalar(node).replace("_", "")),
)


def read_serving_document(path: Path) -> dict[str, Any]:
    """The raw document of a ``.yaml``/``.yml``/``.json`` inputs file (``serving_inputs`` validates it)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = (
            json.loads(text, parse_float=Decimal)
            if path.suffix.lower() == ".json"
            else yaml.load(text, _DecimalLoader)
        )
    except (ValueError, InvalidOperation, yaml.YAMLError) as error:
        raise ServingInputsInvalidError([f"{path.name} is not valid YAML or JSON: {error}"]) from error
    if not isinstance(data, dict):
        raise ServingInputsInvalidError([f"{path.name} must hold a mapping of figures"])
    return data


def serving_inputs(document: Mapping[str, Any]) -> ServingInputs:
    """Validate ``document`` (a file's mapping, with any overrides merged in); raises
    ServingInputsInvalidError listing every problem."""
    problems: list[str] = []

    def text(key: str) -> str:
        value = document.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key}: a non-empty text is required")
            return ""
        return value.strip()

    def number(key: str, value: Any, *, positive: bool = True, at_most_one: bool = False) -> Decimal:
        parsed = _decimal(value)
        if parsed is None:
            problems.append(f"{key}: {value!r} is not a decimal number")
            return Decimal(0)
        if parsed < 0 or (positive and parsed == 0):
            problems.append(f"{key}: must be {'above' if positive else 'at least'} 0, not {parsed}")
        if at_most_one and parsed > 1:
            problems.append(f"{key}: must be at most 1, not {parsed}")
        return parsed

    def per_tier(key: str, *, positive: bool) -> dict[CacheTier, Decimal]:
        value = document.get(key)
        if not isinstance(value, Mapping):
            problems.append(f"{key}: a mapping of device, host and disk is required")
            return {}
        unknown = sorted(set(map(str, value)) - {tier.value for tier in CacheTier})
        if unknown:
            problems.append(f"{key}: unknown tiers {unknown} (device, host, disk)")
        figures = {}
        for tier in CacheTier:
            if tier.value not in value:
                problems.append(f"{key}.{tier}: missing")
                continue
            figures[tier] = number(
                f"{key}.{tier}", value[tier.value], positive=positive, at_most_one=not positive
            )
        return figures

    currency = str(document.get("currency", "")).lower()
    if currency not in MINOR_UNIT_EXPONENTS:
        problems.append(
            f"currency: {document.get('currency')!r} is not one of {', '.join(sorted(MINOR_UNIT_EXPONENTS))}"
        )
    inputs = ServingInputs(
        hardware=text("hardware"),
        measured=text("measured"),
        currency=currency,
        hourly_price=number("hourly_price", document.get("hourly_price"), positive=False),
        utilization=number("utilization", document.get("utilization", "1"), at_most_one=True),
        prefill_tokens_per_s=number("prefill_tokens_per_s", document.get("prefill_tokens_per_s")),
        decode_tokens_per_s=number("decode_tokens_per_s", document.get("decode_tokens_per_s")),
        cache_hit_tokens_per_s=per_tier("cache_hit_tokens_per_s", positive=True),
        cache_hit_shares=per_tier("cache_hit_shares", positive=False),
    )
    shares = inputs.cache_hit_shares
    if len(shares) == len(CacheTier) and sum(shares.values()) != 1:
        problems.append(f"cache_hit_shares: must add up to 1, not {sum(shares.values())}")
    if problems:
        raise ServingInputsInvalidError(problems)
    return inputs


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        parsed = Decimal(str(value).strip().replace("_", ""))
    except InvalidOperation:
        return None
    return parsed if parsed.is_finite() else None

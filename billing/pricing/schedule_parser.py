"""Price schedule files (YAML or JSON) -> validated ``ScheduleVersion`` objects.

Validation reports every problem at once, each with the path of the offending value. Numbers
never pass through ``float``: YAML floats and JSON numbers are read as ``Decimal`` from their
text. The file format (see ``billing/pricing/default_schedule.yaml`` and docs/billing.md)::

    schedule: NAME            currency: usd
    versions:
      - version: LABEL        effective_from: 2026-01-01T00:00:00Z
        context_tiers: [{name, up_to_prompt_tokens}, ..., {name, up_to_prompt_tokens: null}]
        models:
          - match: EXACT-NAME-OR-GLOB
            prices: {CONTEXT_TIER: {TOKEN_CLASS: {mode: graduated|volume,
                                                  tiers: [{up_to: N, per_1m: PRICE}, ..., {up_to: null, ...}]}}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from billing.money import MAX_PRICE_PLACES, MINOR_UNIT_EXPONENTS, places
from billing.pricing.schedule_version import (
    ContextTier,
    ModelPrices,
    ScheduleVersion,
    Tier,
    TierMode,
    TierTable,
    TokenClass,
)
from hybatch.errors import InvalidRequestError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_FILE_KEYS = {"schedule", "currency", "versions"}
VERSION_KEYS = {"version", "effective_from", "context_tiers", "models"}
_CONTEXT_TIER_KEYS = {"name", "up_to_prompt_tokens"}
_MODEL_KEYS = {"match", "prices"}
_TABLE_KEYS = {"mode", "tiers"}
_TIER_KEYS = {"up_to", "per_1m"}
_MISSING = object()  # a required key that is absent: already reported by ``mapping``


@dataclass(frozen=True)
class ScheduleProblem:
    path: str  # "versions[0].models[1].prices.upto_256k.output.tiers[2].up_to"
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ScheduleInvalidError(InvalidRequestError):
    """A schedule failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: list[ScheduleProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"invalid price schedule ({len(problems)} problems):\n{lines}", code="invalid_schedule"
        )


@dataclass(frozen=True)
class ScheduleFile:
    schedule: str
    currency: str
    versions: tuple[ScheduleVersion, ...]


class _DecimalSafeLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as exact ``Decimal`` values from their text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.nodes.ScalarNode) -> Decimal | str:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        return Decimal(text)
    except InvalidOperation:
        return text  # ".inf", ".nan": left as text, so validation reports it as not a price


_DecimalSafeLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def read_schedule_file(path: Path) -> ScheduleFile:
    """Load and validate a ``.yaml``/``.yml``/``.json`` schedule file; raises ScheduleInvalidError."""
    text = Path(path).read_text(encoding="utf-8")
    return parse_schedule_text(text, is_json=Path(path).suffix.lower() == ".json")


def parse_schedule_text(text: str, *, is_json: bool = False) -> ScheduleFile:
    try:
        # yaml.load with a SafeLoader subclass: safe, and floats become Decimals.
        data = json.loads(text, parse_float=Decimal) if is_json else yaml.load(text, _DecimalSafeLoader)
    except (ValueError, yaml.YAMLError) as error:
        raise ScheduleInvalidError(
            [ScheduleProblem("", f"not valid {'JSON' if is_json else 'YAML'}: {error}")]
        ) from error
    return parse_schedule(data)


def parse_schedule(data: Any) -> ScheduleFile:
    """Validate a loaded schedule document; raises ScheduleInvalidError listing every problem."""
    checker = _Checker()
    result = checker.schedule_file(data)
    if checker.problems or result is None:
        raise ScheduleInvalidError(checker.problems)
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Walks a document, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[ScheduleProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ScheduleProblem(path, message))

    def mapping(self, value: Any, path: str, keys: set[str], required: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(path, "must be a mapping")
            return None
        for key in sorted(set(value) - keys, key=str):
            self.problem(_join(path, str(key)), "unknown key")
        for key in sorted(required - set(value)):
            self.problem(_join(path, key), "is required")
        return value

    def sequence(self, value: Any, path: str) -> list[Any] | None:
        if not isinstance(value, list) or not value:
            self.problem(path, "must be a non-empty list")
            return None
        return value

    def name(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not _NAME.match(value):
            self.problem(path, "must be a lowercase name of letters, digits, '_', '.', '-' (at most 64)")
            return None
        return value

    def schedule_file(self, data: Any) -> ScheduleFile | None:
        top = self.mapping(data, "", _FILE_KEYS, _FILE_KEYS)
        if top is None:
            return None
        schedule = self.name(top.get("schedule"), "schedule") if "schedule" in top else None
        currency = top.get("currency")
        if "currency" in top and currency not in MINOR_UNIT_EXPONENTS:
            known = ", ".join(sorted(MINOR_UNIT_EXPONENTS))
            self.problem("currency", f"unknown currency {currency!r} (known: {known})")
            currency = None
        versions = self.sequence(top.get("versions"), "versions") if "versions" in top else None
        built: list[ScheduleVersion | None] = []
        for index, raw in enumerate(versions or []):
            built.append(self.version(raw, f"versions[{index}]", schedule or "?", currency or "usd"))
        self.versions_do_not_overlap(versions or [], built)
        if schedule is None or currency is None or versions is None or None in built:
            return None
        return ScheduleFile(schedule, currency, tuple(v for v in built if v is not None))

    def versions_do_not_overlap(self, raw: list[Any], built: list[ScheduleVersion | None]) -> None:
        seen_labels: dict[str, int] = {}
        for index, version in enumerate(built):
            if version is None:
                continue
            if version.version in seen_labels:
                self.problem(
                    f"versions[{index}].version",
                    f"duplicate version {version.version!r} (also versions[{seen_labels[version.version]}])",
                )
            seen_labels.setdefault(version.version, index)
        dated = [(index, v) for index, v in enumerate(built) if v is not None]
        for (_, earlier), (index, later) in zip(dated, dated[1:], strict=False):
            if later.effective_from <= earlier.effective_from:
                self.problem(
                    f"versions[{index}].effective_from",
                    f"overlaps version {earlier.version!r}: versions must be listed by strictly "
                    "increasing effective_from",
                )

    def version(self, raw: Any, path: str, schedule: str, currency: str) -> ScheduleVersion | None:
        body = self.mapping(raw, path, VERSION_KEYS, VERSION_KEYS)
        if body is None:
            return None
        label = body.get("version")
        if not isinstance(label, str | int) or isinstance(label, bool) or not str(label).strip():
            self.problem(_join(path, "version"), "must be a non-empty label")
            label = None
        effective_from = self.moment(body.get("effective_from"), _join(path, "effective_from"))
        context_tiers = self.context_tiers(body.get("context_tiers"), _join(path, "context_tiers"))
        tier_names = [tier.name for tier in context_tiers] if context_tiers else []
        models = self.models(body.get("models"), _join(path, "models"), tier_names)
        if label is None or effective_from is None or context_tiers is None or models is None:
            return None
        return ScheduleVersion(schedule, str(label), currency, effective_from, context_tiers, models)

    def moment(self, value: Any, path: str) -> datetime | None:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day, tzinfo=UTC)
        elif isinstance(value, str):
            moment = _parse_moment(value)
        else:
            moment = None
        if moment is None:
            self.problem(path, "must be an ISO 8601 date or date-time")
            return None
        if moment.tzinfo is None:
            self.problem(path, "a date-time must carry its time zone (e.g. 2026-01-01T00:00:00Z)")
            return None
        return moment.astimezone(UTC)

    def bounds(self, values: list[object], path: Callable[[int], str], what: str) -> list[int | None] | None:
        """Inclusive upper bounds: positive, strictly increasing, only the last one null."""
        bounds: list[int | None] = []
        ok = True
        for index, value in enumerate(values):
            is_last = index == len(values) - 1
            if value is _MISSING:
                ok = False
            elif value is None:
                if not is_last:
                    self.problem(path(index), f"only the last {what} may be open-ended (null)")
                    ok = False
            elif not _is_int(value) or value <= 0:
                self.problem(path(index), "must be a positive whole number of tokens or null")
                ok = False
            elif bounds and bounds[-1] is not None and value <= bounds[-1]:
                self.problem(path(index), f"bounds must increase: {value} is not above {bounds[-1]}")
                ok = False
            elif is_last:
                self.problem(path(index), f"the last {what} must be open-ended (null)")
                ok = False
            bounds.append(value if _is_int(value) else None)
        return bounds if ok else None

    def context_tiers(self, raw: Any, path: str) -> tuple[ContextTier, ...] | None:
        items = self.sequence(raw, path)
        if items is None:
            return None
        names: list[str | None] = []
        raw_bounds: list[Any] = []
        for index, item in enumerate(items):
            entry = self.mapping(item, f"{path}[{index}]", _CONTEXT_TIER_KEYS, _CONTEXT_TIER_KEYS)
            name = self.name(entry.get("name"), f"{path}[{index}].name") if entry is not None else None
            if name is not None and name in names:
                self.problem(f"{path}[{index}].name", f"duplicate context tier {name!r}")
                name = None
            names.append(name)
            raw_bounds.append(entry.get("up_to_prompt_tokens", _MISSING) if entry is not None else _MISSING)
        bounds = self.bounds(raw_bounds, lambda i: f"{path}[{i}].up_to_prompt_tokens", "context tier")
        if bounds is None or None in names:
            return None
        return tuple(ContextTier(name, bound) for name, bound in zip(names, bounds, strict=True) if name)

    def models(self, raw: Any, path: str, tier_names: list[str]) -> tuple[ModelPrices, ...] | None:
        items = self.sequence(raw, path)
        if items is None:
            return None
        built: list[ModelPrices | None] = []
        matches: set[str] = set()
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            entry = self.mapping(item, item_path, _MODEL_KEYS, _MODEL_KEYS)
            if entry is None:
                built.append(None)
                continue
            match = entry.get("match")
            if not isinstance(match, str) or not match.strip():
                self.problem(f"{item_path}.match", "must be a model name or a glob pattern")
                match = None
            elif match in matches:
                self.problem(f"{item_path}.match", f"duplicate model entry {match!r}")
            else:
                matches.add(match)
            tables = self.prices(entry.get("prices"), f"{item_path}.prices", tier_names)
            built.append(ModelPrices(match, tables) if match is not None and tables is not None else None)
        if None in built:
            return None
        return tuple(entry for entry in built if entry is not None)

    def prices(
        self, raw: Any, path: str, tier_names: list[str]
    ) -> dict[tuple[str, TokenClass], TierTable] | None:
        by_tier = self.mapping(raw, path, set(tier_names), set(tier_names))
        if by_tier is None:
            return None
        tables: dict[tuple[str, TokenClass], TierTable] = {}
        ok = True
        classes = {token_class.value for token_class in TokenClass}
        for tier_name in tier_names:
            if tier_name not in by_tier:
                ok = False
                continue
            tier_path = _join(path, tier_name)
            by_class = self.mapping(by_tier[tier_name], tier_path, classes, classes)
            if by_class is None:
                ok = False
                continue
            if by_class.keys() - classes:
                ok = False  # each reported as an unknown key: an unknown token class
            for token_class in TokenClass:
                if token_class.value not in by_class:
                    ok = False
                    continue
                table = self.table(by_class[token_class.value], _join(tier_path, token_class.value))
                if table is None:
                    ok = False
                else:
                    tables[(tier_name, token_class)] = table
        return tables if ok else None

    def table(self, raw: Any, path: str) -> TierTable | None:
        body = self.mapping(raw, path, _TABLE_KEYS, _TABLE_KEYS)
        if body is None:
            return None
        mode = body.get("mode")
        if "mode" in body and mode not in {m.value for m in TierMode}:
            self.problem(_join(path, "mode"), f"unknown mode {mode!r} (graduated or volume)")
            mode = None
        items = self.sequence(body.get("tiers"), _join(path, "tiers")) if "tiers" in body else None
        if items is None:
            return None
        tiers_path = _join(path, "tiers")
        entries = [
            self.mapping(item, f"{tiers_path}[{i}]", _TIER_KEYS, _TIER_KEYS) for i, item in enumerate(items)
        ]
        bounds = self.bounds(
            [entry.get("up_to", _MISSING) if entry is not None else _MISSING for entry in entries],
            lambda i: f"{tiers_path}[{i}].up_to",
            "tier",
        )
        prices = [
            self.price(entry["per_1m"], f"{tiers_path}[{i}].per_1m")
            if entry is not None and "per_1m" in entry
            else None
            for i, entry in enumerate(entries)
        ]
        if mode is None or bounds is None or None in prices or None in entries:
            return None
        tiers = tuple(
            Tier(bound, price) for bound, price in zip(bounds, prices, strict=True) if price is not None
        )
        return TierTable(TierMode(mode), tiers)

    def price(self, value: Any, path: str) -> Decimal | None:
        if _is_int(value):
            value = Decimal(value)
        elif isinstance(value, str):
            try:
                value = Decimal(value.strip())
            except InvalidOperation:
                value = None
        if not isinstance(value, Decimal) or not value.is_finite():
            self.problem(path, 'must be a decimal price per 1M tokens (e.g. 0.07 or "0.07")')
            return None
        if value < 0:
            self.problem(path, f"negative price {value}")
            return None
        if places(value) > MAX_PRICE_PLACES:
            self.problem(path, f"at most {MAX_PRICE_PLACES} decimal places")
            return None
        return value


def _parse_moment(text: str) -> datetime | None:
    """``"2026-01-01"`` (midnight UTC) or an ISO date-time; None when neither."""
    try:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

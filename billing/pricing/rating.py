"""Rating: usage records -> exact priced pieces -> invoice line drafts rounded once per line.

Records are rated in ledger order (``created_at``, then id). For each ``ChargeKey`` a month's
records fill the units ``(0, V]`` of that charge's monthly volume ``V`` one after another, each
priced by the tier table of the schedule version in effect when it was created (so a schedule
change mid-month keeps the month's tier progress). Late records of an already billed month
continue after that month's billed volume (``volume_before``). On a volume-mode table, where every
unit of a month costs the price of the tier the month's whole volume reaches, late records that
move the volume to another tier also reprice the units already billed, by the difference
(``reprice_billed_units``; negative, a credit, when the new tier is cheaper): the month then costs
in all exactly what the schedule says its whole volume costs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from billing.money import add, amount_for_tokens, round_to_minor
from billing.pricing.schedule_store import PriceBook
from billing.pricing.schedule_version import ChargeKey, ScheduleVersion, TierMode, TierTable, TokenClass
from hybatch.models import UsageRecord

TOKEN_CLASS_ORDER = {token_class: index for index, token_class in enumerate(TokenClass)}


class UsageRow(NamedTuple):
    """What rating reads from one ledger row (a named tuple: a month is rated from thousands)."""

    usage_record_id: int
    created_at: datetime
    model: str
    prompt_tokens: int
    tokens: Mapping[TokenClass, int]

    @classmethod
    def from_record(cls, record: UsageRecord) -> UsageRow:
        return cls(
            usage_record_id=record.id,
            created_at=record.created_at,
            model=record.model,
            prompt_tokens=record.prompt_tokens,
            tokens={
                TokenClass.CACHE_HIT_INPUT: record.cache_hit_input_tokens,
                TokenClass.CACHE_MISS_INPUT: record.cache_miss_input_tokens,
                TokenClass.OUTPUT: record.output_tokens,
            },
        )


class RatedPiece(NamedTuple):
    """Tokens of one record, one class and one price tier, with their exact (unrounded) amount.

    A named tuple, not a dataclass: rating makes one per record, class and tier, and a tuple is
    built four times faster.
    """

    usage_record_id: int
    created_at: datetime
    origin_period: str
    price_version: str
    currency: str
    charge: ChargeKey
    tier_number: int
    tokens: int
    unit_price: Decimal  # per 1M tokens (for a repricing: the new tier's price minus the old's)
    amount: Decimal
    repriced_from_tier: int | None = None  # set on a repricing of units billed at that tier


@dataclass(frozen=True)
class LineKey:
    origin_period: str
    price_version: str
    model: str
    token_class: TokenClass
    context_tier: str
    tier_number: int
    repriced_from_tier: int | None = None  # a repricing line: units billed at that tier before

    def sort_key(self) -> tuple:
        return (
            self.origin_period,
            self.price_version,
            self.model,
            self.context_tier,
            TOKEN_CLASS_ORDER[self.token_class],
            self.tier_number,
            0 if self.repriced_from_tier is None else self.repriced_from_tier,
        )


@dataclass(frozen=True)
class LineDraft:
    key: LineKey
    currency: str
    tokens: int
    unit_price: Decimal
    amount: Decimal  # exact sum of the pieces
    amount_minor: int  # amount rounded once (billing.money.round_to_minor)


# (id of the version, model, context tier, token class) -> the charge and the table that prices it;
# one cache serves one pass over rows, while the book keeps its versions (and their ids) alive
_ChargeCache = dict[tuple[int, str, str, TokenClass], tuple[ChargeKey, TierTable]]


def _charges(
    row: UsageRow, version: ScheduleVersion, cache: _ChargeCache
) -> Iterable[tuple[ChargeKey, TierTable, int]]:
    context_tier = version.context_tier_for(row.prompt_tokens).name
    for token_class in TOKEN_CLASS_ORDER:  # a dict iterates like the enum, without its overhead
        tokens = row.tokens[token_class]
        if tokens > 0:
            # a month holds thousands of rows of a few charges: resolve each charge's table once
            lookup = (id(version), row.model, context_tier, token_class)
            found = cache.get(lookup)
            if found is None:
                table = version.table(row.model, context_tier, token_class)
                found = cache[lookup] = (ChargeKey(row.model, token_class, context_tier), table)
            yield found[0], found[1], tokens


def charge_volumes(rows: Iterable[UsageRow], book: PriceBook) -> dict[ChargeKey, int]:
    """Tokens per charge of ``rows`` (each classified by the version in effect at its time)."""
    volumes: dict[ChargeKey, int] = defaultdict(int)
    cache: _ChargeCache = {}
    for row in rows:
        for charge, _table, tokens in _charges(row, book.at(row.created_at), cache):
            volumes[charge] += tokens
    return dict(volumes)


def rate_month(
    rows: list[UsageRow],
    book: PriceBook,
    *,
    origin_period: str,
    volume_before: Mapping[ChargeKey, int] | None = None,
) -> list[RatedPiece]:
    """Price ``rows`` (one account, all created in ``origin_period``, in ledger order).

    ``volume_before`` is the month's volume per charge already billed; the rows' units follow it.
    A volume-mode table prices every row at the tier of the month's whole volume (before + rows).
    """
    volume_before = volume_before or {}
    cache: _ChargeCache = {}
    months: dict[ChargeKey, _ChargeMonth] = {}
    planned: list[tuple[UsageRow, ScheduleVersion, ChargeKey, TierTable, int, _ChargeMonth]] = []
    for row in rows:
        version = book.at(row.created_at)
        for charge, table, tokens in _charges(row, version, cache):
            month = months.get(charge)
            if month is None:
                month = months[charge] = _ChargeMonth(volume_before.get(charge, 0))
            month.volume += tokens
            planned.append((row, version, charge, table, tokens, month))
    pieces: list[RatedPiece] = []
    for row, version, charge, table, tokens, month in planned:
        for tier_slice in table.slices(month.filled, tokens, month.volume):
            pieces.append(
                RatedPiece(
                    usage_record_id=row.usage_record_id,
                    created_at=row.created_at,
                    origin_period=origin_period,
                    price_version=version.price_version,
                    currency=version.currency,
                    charge=charge,
                    tier_number=tier_slice.tier_number,
                    tokens=tier_slice.tokens,
                    unit_price=tier_slice.unit_price,
                    amount=amount_for_tokens(tier_slice.tokens, tier_slice.unit_price),
                )
            )
        month.filled += tokens
    return pieces


def reprice_billed_units(
    rows: list[UsageRow],
    book: PriceBook,
    *,
    origin_period: str,
    volume_before: Mapping[ChargeKey, int],
    volume_after: Mapping[ChargeKey, int],
) -> list[RatedPiece]:
    """Repricing pieces for ``rows`` (a month's records already billed, at ``volume_before``) now that
    the month's volume per charge is ``volume_after``: on volume-mode tables whose tier changed, each
    record's units at (new tier price - old tier price). Graduated tables need none: their late
    units simply continue after the billed ones."""
    cache: _ChargeCache = {}
    pieces: list[RatedPiece] = []
    for row in rows:
        version = book.at(row.created_at)
        for charge, table, tokens in _charges(row, version, cache):
            if table.mode is not TierMode.VOLUME:
                continue
            old = table.tier_number_for(volume_before.get(charge, 0))
            new = table.tier_number_for(volume_after.get(charge, 0))
            change = table.tiers[new - 1].unit_price - table.tiers[old - 1].unit_price
            if new == old or change == 0:
                continue
            pieces.append(
                RatedPiece(
                    usage_record_id=row.usage_record_id,
                    created_at=row.created_at,
                    origin_period=origin_period,
                    price_version=version.price_version,
                    currency=version.currency,
                    charge=charge,
                    tier_number=new,
                    tokens=tokens,
                    unit_price=change,
                    amount=amount_for_tokens(tokens, change),
                    repriced_from_tier=old,
                )
            )
    return pieces


class _ChargeMonth:
    """One charge's month while rating: units filled so far, and the month's whole volume."""

    __slots__ = ("filled", "volume")

    def __init__(self, volume_before: int) -> None:
        self.filled = volume_before  # units (0, filled] are priced
        self.volume = volume_before  # before + every row's tokens, once all rows are planned


def line_key(piece: RatedPiece) -> LineKey:
    return LineKey(
        origin_period=piece.origin_period,
        price_version=piece.price_version,
        model=piece.charge.model,
        token_class=piece.charge.token_class,
        context_tier=piece.charge.context_tier,
        tier_number=piece.tier_number,
        repriced_from_tier=piece.repriced_from_tier,
    )


def line_drafts(pieces: Iterable[RatedPiece]) -> list[LineDraft]:
    """Group pieces into invoice lines (sorted) and round each line's exact amount once."""
    grouped: dict[LineKey, list[RatedPiece]] = defaultdict(list)
    for piece in pieces:
        grouped[line_key(piece)].append(piece)
    drafts = []
    for key in sorted(grouped, key=LineKey.sort_key):
        group = grouped[key]
        amount = add(*(piece.amount for piece in group))
        currency = group[0].currency
        drafts.append(
            LineDraft(
                key=key,
                currency=currency,
                tokens=sum(piece.tokens for piece in group),
                unit_price=group[0].unit_price,
                amount=amount,
                amount_minor=round_to_minor(amount, currency),
            )
        )
    return drafts

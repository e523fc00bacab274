"""The price sheet pivoted by token class, including classes with different tier boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from api.dashboard.price_view import price_bands
from billing.pricing.price_sheet import PriceRow, PriceSheet, PriceTierRow
from billing.pricing.schedule_version import TierMode, TokenClass


def _row(token_class: TokenClass, tiers: tuple[PriceTierRow, ...]) -> PriceRow:
    return PriceRow("m", "short", 0, 1000, token_class, TierMode.GRADUATED, tiers)


def test_bands_split_at_every_boundary() -> None:
    sheet = PriceSheet(
        account_id="a",
        at=datetime(2026, 1, 1, tzinfo=UTC),
        schedule="s",
        version="1",
        price_version="s@1",
        currency="usd",
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        rows=(
            _row(TokenClass.CACHE_HIT_INPUT, (PriceTierRow(1, None, Decimal("0.1")),)),
            _row(
                TokenClass.CACHE_MISS_INPUT,
                (PriceTierRow(1, 100, Decimal("1")), PriceTierRow(101, None, Decimal("0.8"))),
            ),
            _row(
                TokenClass.OUTPUT, (PriceTierRow(1, 50, Decimal("3")), PriceTierRow(51, None, Decimal("2")))
            ),
        ),
    )
    bands = price_bands(sheet)
    assert [(band.first_token, band.up_to) for band in bands] == [(1, 50), (51, 100), (101, None)]
    assert [band.prices[TokenClass.CACHE_MISS_INPUT] for band in bands] == [
        Decimal("1"),
        Decimal("1"),
        Decimal("0.8"),
    ]
    assert [band.prices[TokenClass.OUTPUT] for band in bands] == [Decimal("3"), Decimal("2"), Decimal("2")]
    assert {band.prices[TokenClass.CACHE_HIT_INPUT] for band in bands} == {Decimal("0.1")}

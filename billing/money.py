"""Exact money arithmetic: Decimal amounts, integer minor units, one rounding step.

Prices are decimals per 1M tokens with at most ``MAX_PRICE_PLACES`` places, so an amount
``tokens * price / 1M`` has at most 12 places and is exact. ``EXACT`` raises on any inexact
operation instead of silently rounding; ``round_to_minor`` is the only place money is rounded.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per 1M tokens
MAX_PRICE_PLACES = 6

# ISO 4217 minor-unit exponents of the currencies a schedule may use.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "usd": 2,
    "eur": 2,
    "gbp": 2,
    "cny": 2,
    "hkd": 2,
    "sgd": 2,
    "cad": 2,
    "aud": 2,
    "chf": 2,
    "inr": 2,
    "jpy": 0,
    "krw": 0,
}

EXACT = decimal.Context(
    prec=60,
    rounding=ROUND_HALF_UP,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
# Rounds (no Inexact trap): used by round_to_minor only.
ROUNDING = decimal.Context(prec=60, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])
ZERO = Decimal(0)


def amount_for_tokens(tokens: int, price_per_1m: Decimal) -> Decimal:
    """``tokens * price_per_1m / 1M``, exactly (raises ``decimal.Inexact`` rather than round)."""
    return EXACT.divide(EXACT.multiply(Decimal(tokens), price_per_1m), Decimal(TOKENS_PER_PRICE_UNIT))


def add(*amounts: Decimal) -> Decimal:
    """Exact sum of decimal amounts."""
    total = ZERO
    for amount in amounts:
        total = EXACT.add(total, amount)
    return total


def round_to_minor(amount: Decimal, currency: str) -> int:
    """THE rounding step: ``amount`` (major units) to integer minor units, ROUND_HALF_UP.

    Applied once per invoice line to the line's exact amount; never to per-request amounts.
    """
    exponent = MINOR_UNIT_EXPONENTS[currency]
    scaled = amount.scaleb(exponent, EXACT)
    return int(ROUNDING.quantize(scaled, Decimal(1)))


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Integer minor units back to major units (``1234`` usd -> ``Decimal("12.34")``)."""
    return Decimal(amount_minor).scaleb(-MINOR_UNIT_EXPONENTS[currency], EXACT)


def decimal_string(amount: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros (``"0.000123"``, ``"10"``)."""
    return format(amount.normalize(EXACT), "f")


def places(value: Decimal) -> int:
    """Number of decimal places written in ``value`` (``Decimal("0.070")`` -> 3)."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0

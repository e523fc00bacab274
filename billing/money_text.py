"""How money, token counts and rates are written for people: the dashboard, the invoice PDF and the
serving-cost report share these.

Money arrives as ``Decimal`` (never float) and is shown with two decimals, or with two significant
digits when the amount is below one cent, so that small batches do not read as free. Every
character used is in Windows-1252, so the PDF's built-in fonts print them (``billing.invoicing.pdf``).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from billing.money import MINOR_UNIT_EXPONENTS, decimal_string, minor_to_decimal

CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cny": "¥", "jpy": "¥"}
ZERO_DECIMAL_CURRENCIES = {"jpy", "krw"}
MAX_SUB_CENT_PLACES = 8
COMPACT_UNITS = ((Decimal(10**12), "T"), (Decimal(10**9), "B"), (Decimal(10**6), "M"), (Decimal(10**3), "K"))


def integer(value: int | None) -> str:
    """``1234567`` -> ``1,234,567``."""
    return "—" if value is None else f"{value:,}"


def compact(value: int | Decimal | None) -> str:
    """``1234567`` -> ``1.23M``; below 1,000 the plain number."""
    if value is None:
        return "—"
    number = Decimal(value)
    for size, suffix in COMPACT_UNITS:
        if abs(number) >= size:
            scaled = (number / size).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            return f"{scaled.normalize():f}{suffix}"
    return f"{int(number):,}"


def money(amount: Decimal | None, currency: str | None) -> str:
    """``Decimal("1234.5"), "usd"`` -> ``$1,234.50``; under a cent, two significant digits."""
    if amount is None:
        return "—"
    code = (currency or "usd").lower()
    places = 0 if code in ZERO_DECIMAL_CURRENCIES else 2
    if amount != 0 and abs(amount) < Decimal(1).scaleb(-places):
        # a fraction of a cent: show it ($0.0075) rather than "$0.00"
        places = min(MAX_SUB_CENT_PLACES, 1 - abs(amount).adjusted())
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{abs(rounded):,.{places}f}"
    if places > 2:
        text = text.rstrip("0")
    return ("-" if rounded < 0 else "") + _with_currency(text, code)


def exact_amount(amount: Decimal, currency: str) -> str:
    """An exact amount for an operator's terminal, nothing rounded: at least the currency's minor
    places, more where the amount has them (``10`` usd -> ``10.00``, ``8.4999`` -> ``8.4999``,
    ``1500`` jpy -> ``1500``)."""
    minor_places = MINOR_UNIT_EXPONENTS.get(currency.lower(), 2)
    text = decimal_string(amount)
    written = len(text.partition(".")[2])
    if written >= minor_places:
        return text
    return f"{text}{'' if '.' in text else '.'}{'0' * (minor_places - written)}"


def _with_currency(digits: str, code: str) -> str:
    """``"1.50", "usd"`` -> ``$1.50``; a currency without a symbol follows as its code."""
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{symbol}{digits}" if symbol else f"{digits} {code.upper()}"


def minor_money(amount_minor: int | None, currency: str) -> str:
    """An amount in minor units (cents): ``1234, "usd"`` -> ``$12.34``."""
    if amount_minor is None:
        return "—"
    return money(minor_to_decimal(amount_minor, currency.lower()), currency)


def unit_price(price_per_1m: Decimal, currency: str, with_unit: bool = True) -> str:
    """A per-1M-token price with all its digits: ``Decimal("0.028")`` -> ``$0.028 / 1M tokens``."""
    code = currency.lower()
    digits = f"{price_per_1m.normalize():f}"
    if "." not in digits or len(digits.split(".")[1]) < 2:
        digits = f"{price_per_1m:.2f}"
    text = _with_currency(digits, code)
    return f"{text} / 1M tokens" if with_unit else text


def percent(fraction: Decimal | None) -> str:
    """``Decimal("0.9342")`` -> ``93.4%``."""
    if fraction is None:
        return "—"
    value = (Decimal(fraction) * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{value}%"

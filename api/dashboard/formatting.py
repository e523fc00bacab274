"""How the dashboard writes numbers: tokens with separators, money with its currency, rates as %.

Money, token counts and rates are written by ``billing.money_text`` (the invoice PDF and the
serving-cost report print the same words); this module adds times and durations, and the Jinja filters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from billing.invoicing.line_labels import (
    adjustment_note,
    monthly_tokens_label,
    prompt_length_label,
    token_class_label,
)
from billing.money_text import compact, integer, minor_money, money, percent, unit_price


def timestamp(moment: datetime | None) -> str:
    """``2026-11-28 09:24 UTC``."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(span: timedelta | None) -> str:
    """``timedelta(seconds=3725)`` -> ``1 h 2 min``; under a minute ``< 1 min``."""
    if span is None:
        return "—"
    minutes = int(span.total_seconds() // 60)
    if minutes < 1:
        return "< 1 min"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(part for part in parts if part)


FILTERS = {
    "integer": integer,
    "compact": compact,
    "money": money,
    "minor_money": minor_money,
    "unit_price": unit_price,
    "percent": percent,
    "timestamp": timestamp,
    "duration": duration,
    "token_class": token_class_label,  # invoice lines: as the invoice PDF writes them
    "adjustment_note": adjustment_note,
    "prompt_length": prompt_length_label,  # (above, up_to] prompt tokens, as the price table
    "monthly_tokens": monthly_tokens_label,
}

"""The usage page's content for one account and range: cards, three charts, three breakdowns.

Every number comes from ``billing.usage.dashboard_summary``, which shares its query with ``GET /v1/usage``,
so the page and the API agree to the token and the cent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from api.dashboard import formatting
from api.dashboard.charts import Series, line_chart, stacked_bar_chart
from api.dashboard.ranges import UsageRange
from billing.usage.dashboard_summary import UsageSummary, summarize_usage

# A phone's chart is drawn in a viewBox about as wide as the screen shows it (a 390 px screen has
# ~330 px for it), so its 11 px labels stay ~11 px instead of shrinking with a 720 px drawing.
NARROW_WIDTH_PX = 340


@dataclass(frozen=True)
class UsageView:
    summary: UsageSummary
    range: UsageRange
    token_chart: Markup
    cost_chart: Markup
    hit_rate_chart: Markup
    bucket_labels: list[str]

    @property
    def is_empty(self) -> bool:
        return self.summary.totals.requests == 0


def bucket_label(start: datetime, bucket_width: str) -> str:
    return start.strftime("%H:%M") if bucket_width == "1h" else start.strftime("%b %d")


def _both_widths(draw: Callable[..., Markup], *, chart_id: str, **chart: Any) -> Markup:
    """The chart drawn for a wide screen and for a phone; the stylesheet shows one of the two."""
    wide = draw(chart_id=chart_id, **chart)
    narrow = draw(chart_id=f"{chart_id}-narrow", width=NARROW_WIDTH_PX, **chart)
    return Markup('<div class="chart-wide">{}</div><div class="chart-narrow">{}</div>').format(wide, narrow)


def usage_view(session: Session, account_id: str, usage_range: UsageRange, now: datetime) -> UsageView:
    """Summarize ``account_id``'s usage in ``usage_range`` and draw its charts (reads only)."""
    summary = summarize_usage(
        session,
        account_id,
        start=usage_range.start,
        end=usage_range.end,
        bucket_width=usage_range.bucket_width,
        now=now,
    )
    labels = [bucket_label(bucket.start, usage_range.bucket_width) for bucket in summary.buckets]
    totals = [bucket.totals for bucket in summary.buckets]
    token_chart = _both_widths(
        stacked_bar_chart,
        chart_id="chart-tokens",
        title="Tokens by class",
        labels=labels,
        series=[
            Series("Cache-hit input", tuple(t.cache_hit_input_tokens for t in totals)),
            Series("Cache-miss input", tuple(t.cache_miss_input_tokens for t in totals)),
            Series("Output", tuple(t.output_tokens for t in totals)),
        ],
        format_value=formatting.compact,
    )
    cost_chart = _both_widths(
        stacked_bar_chart,
        chart_id="chart-cost",
        title=f"Cost ({summary.currency.upper()})",
        labels=labels,
        series=[Series("Cost", tuple(t.cost for t in totals))],
        format_value=partial(formatting.money, currency=summary.currency),
    )
    hit_rate_chart = _both_widths(
        line_chart,
        chart_id="chart-hit-rate",
        title="Cache hit rate (share of input tokens served from the cache)",
        labels=labels,
        series=[Series("Hit rate", tuple(t.hit_rate for t in totals))],
        format_value=formatting.percent,
        y_max=Decimal(1),
    )
    return UsageView(summary, usage_range, token_chart, cost_chart, hit_rate_chart, labels)

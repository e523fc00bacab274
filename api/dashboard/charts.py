"""Server-side SVG charts for the usage dashboard: stacked bars and lines over labelled slots.

The page is served with ``Content-Security-Policy: style-src 'self'``, so the SVG carries no ``style``
attribute and no ``<style>`` element: geometry lives in presentation attributes and every colour comes
from the page's stylesheet through classes (``chart-series-{i}``, ``chart-axis``, ``chart-grid``,
``chart-label``, ``chart-empty``, ``chart-line``, ``chart-point``).

Values are ``int`` or ``Decimal``. Sums and tick values stay exact (``format_value`` always gets a
``Decimal``); only pixel geometry goes through ``float``, rounded to 2 decimals. The output is a pure
function of the arguments, and all text is escaped.

Y ticks start at 0. The step is the smallest of {1, 2, 2.5, 5} x 10^k that reaches the maximum in at
most ``MAX_INTERVALS`` intervals (a whole number, so not 2.5 or below 1, when every value is an ``int``),
and the axis top is the first multiple of the step >= the maximum, with at least 2 intervals:
max 7 -> 0,2,4,6,8; max 950 -> 0,200,...,1000; max 0.9 -> 0,0.2,...,1; int max 1 -> 0,1,2;
int max 12 -> 0,5,10,15 but Decimal max 12 -> 0,2.5,...,12.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from markupsafe import Markup

SVG_NS = "http://www.w3.org/2000/svg"
EMPTY_TEXT = "No usage in this range"

# Plot area inside a width x height chart: x in [left, width - PLOT_RIGHT_PX],
# y in [PLOT_TOP_PX, height - PLOT_BOTTOM_PX]. [0, PLOT_TOP_PX) holds the legend, the band below the
# plot the x labels, and [0, left) the y tick labels; left widens past the minimum for long ones.
PLOT_TOP_PX = 32
PLOT_BOTTOM_PX = 28
PLOT_RIGHT_PX = 16
PLOT_LEFT_MIN_PX = 64
LEGEND_Y_PX = 14
LEGEND_MARGIN_PX = 4  # least space between the legend and the chart's edges
BAR_FILL = 0.7  # fraction of a label's slot its bar covers
FONT_PX = 11
CHAR_PX = 6.6  # estimated advance of one character at FONT_PX, for fitting labels
LABEL_GAP_PX = 8  # least free space between two x labels
TICK_GAP_PX = 6
MAX_INTERVALS = 5
MAX_X_LABELS = 10
NICE_MANTISSAS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))

FormatValue = Callable[[Decimal], str]


@dataclass(frozen=True)
class Series:
    """One legend entry and its values, aligned with the chart's labels."""

    name: str  # legend text, e.g. "Cache-hit input"
    values: tuple[int | Decimal | None, ...]  # one per label; None = no data (a gap)


@dataclass(frozen=True)
class _Plot:
    left: float
    right: float
    top: float
    bottom: float
    axis_top: Decimal
    num_slots: int

    @property
    def slot_px(self) -> float:
        return (self.right - self.left) / self.num_slots

    def x_centre(self, index: int) -> float:
        return self.left + (index + 0.5) * self.slot_px

    def y(self, value: Decimal) -> float:
        fraction = float(min(value, self.axis_top) / self.axis_top)
        return self.bottom - fraction * (self.bottom - self.top)


def stacked_bar_chart(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    format_value: FormatValue,
    width: int = 720,
    height: int = 240,
) -> Markup:
    """One bar per label, the series stacked from the axis up in order; zero and None draw no rect.

    Every rect has a ``<title>`` tooltip "label — series: value". Raises ValueError when a series'
    length differs from ``labels`` or a value is negative or not an int/Decimal.
    """
    columns = _checked_columns(labels, series)
    stack_totals = [sum((c[j] for c in columns if c[j] is not None), Decimal(0)) for j in range(len(labels))]
    if max(stack_totals, default=Decimal(0)) == 0:
        return _empty_svg(chart_id, title, labels, width, height)
    ticks = _nice_ticks(max(stack_totals), whole_steps=_all_ints(series))
    plot, axes = _axes(width, height, ticks, labels, format_value)
    bar_px = plot.slot_px * BAR_FILL
    bases = [Decimal(0)] * len(labels)
    groups, totals = [], []
    for index, (one, column) in enumerate(zip(series, columns, strict=True)):
        rects = []
        for j, value in enumerate(column):
            if value is None or value == 0:
                continue
            # Round both edges first so stacked rects meet without hairline gaps.
            y_low, y_high = round(plot.y(bases[j]), 2), round(plot.y(bases[j] + value), 2)
            bases[j] += value
            tooltip = _tag("title", f"{labels[j]} — {one.name}: {format_value(value)}")
            x = plot.x_centre(j) - bar_px / 2
            rects.append(_tag("rect", tooltip, x=x, y=y_high, width=bar_px, height=y_low - y_high))
        groups.append(_tag("g", _join(rects), class_=f"chart-series-{index}"))
        totals.append(f"{one.name} {format_value(sum((v for v in column if v is not None), Decimal(0)))}")
    desc = f"{_label_range(labels)}. Totals: {'; '.join(totals)}."
    body = axes + _join(groups) + _legend(series, plot.left, width)
    return _svg(chart_id, title, desc, width, height, body)


def line_chart(
    *,
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    format_value: FormatValue,
    y_max: Decimal | None = None,
    width: int = 720,
    height: int = 240,
) -> Markup:
    """One path per series through the label slots, broken at None (a new ``M`` subpath), and a point
    with a ``<title>`` tooltip at each value.

    ``y_max`` builds the axis for that maximum instead of the data's (e.g. 1 for a rate); values above
    it are drawn at the top edge. Raises ValueError like ``stacked_bar_chart``, or for ``y_max`` <= 0.
    """
    columns = _checked_columns(labels, series)
    if y_max is not None and not (_is_usable(y_max) and y_max > 0):
        raise ValueError(f"y_max must be an int/Decimal > 0, got {y_max!r}")
    present = [v for c in columns for v in c if v is not None]
    if not any(present):
        return _empty_svg(chart_id, title, labels, width, height)
    whole_steps = _all_ints(series) and (y_max is None or isinstance(y_max, int))
    ticks = _nice_ticks(max(present) if y_max is None else Decimal(y_max), whole_steps=whole_steps)
    plot, axes = _axes(width, height, ticks, labels, format_value)
    parts, ranges = [], []
    for index, (one, column) in enumerate(zip(series, columns, strict=True)):
        commands, points, pen_down = [], [], False
        series_class = f"chart-series-{index}"
        for j, value in enumerate(column):
            if value is None:
                pen_down = False
                continue
            x, y = plot.x_centre(j), plot.y(value)
            commands.append(f"{'L' if pen_down else 'M'}{_num(x)} {_num(y)}")
            pen_down = True
            tooltip = _tag("title", f"{labels[j]} — {one.name}: {format_value(value)}")
            points.append(_tag("circle", tooltip, class_=f"chart-point {series_class}", cx=x, cy=y, r=3))
        if commands:
            parts.append(_tag("path", class_=f"chart-line {series_class}", fill="none", d=" ".join(commands)))
        parts.extend(points)
        values = [v for v in column if v is not None]
        span = f"from {format_value(min(values))} to {format_value(max(values))}" if values else "no data"
        ranges.append(f"{one.name} {span}")
    desc = f"{_label_range(labels)}. {'; '.join(ranges)}."
    body = axes + _join(parts) + _legend(series, plot.left, width)
    return _svg(chart_id, title, desc, width, height, body)


def _checked_columns(labels: Sequence[str], series: Sequence[Series]) -> list[tuple[Decimal | None, ...]]:
    problems = []
    for one in series:
        if len(one.values) != len(labels):
            problems.append(f"series {one.name!r} has {len(one.values)} values for {len(labels)} labels")
        bad = [v for v in one.values if v is not None and not _is_usable(v)]
        if bad:
            problems.append(f"series {one.name!r} has values that are not an int/Decimal >= 0: {bad}")
    if problems:
        raise ValueError("; ".join(problems))
    return [tuple(None if v is None else Decimal(v) for v in one.values) for one in series]


def _is_usable(value: object) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite() and value >= 0
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _all_ints(series: Sequence[Series]) -> bool:
    return all(isinstance(v, int) for one in series for v in one.values if v is not None)


def _nice_ticks(maximum: Decimal, *, whole_steps: bool) -> tuple[Decimal, ...]:
    least_step = max(maximum / MAX_INTERVALS, Decimal(1)) if whole_steps else maximum / MAX_INTERVALS
    magnitude = Decimal(10) ** least_step.adjusted()
    steps = (m * magnitude for m in NICE_MANTISSAS)
    step = next(s for s in steps if s >= least_step and (not whole_steps or s % 1 == 0))
    num_intervals = max(2, int((maximum / step).to_integral_value(rounding=ROUND_CEILING)))
    return tuple(_plain(step * i) for i in range(num_intervals + 1))


def _plain(value: Decimal) -> Decimal:
    """``250`` rather than ``250.0`` or ``2.5E+2``, so formatters print what a reader expects."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _axes(
    width: int, height: int, ticks: tuple[Decimal, ...], labels: Sequence[str], format_value: FormatValue
) -> tuple[_Plot, Markup]:
    tick_texts = [format_value(tick) for tick in ticks]
    left = max(PLOT_LEFT_MIN_PX, max(len(t) for t in tick_texts) * CHAR_PX + 2 * TICK_GAP_PX)
    right, bottom = width - PLOT_RIGHT_PX, height - PLOT_BOTTOM_PX
    plot = _Plot(left, right, PLOT_TOP_PX, bottom, ticks[-1], len(labels))
    y_ticks = []
    for tick, tick_text in zip(ticks, tick_texts, strict=True):
        y = plot.y(tick)
        if tick:
            y_ticks.append(_tag("line", class_="chart-grid", x1=left, y1=y, x2=right, y2=y))
        y_ticks.append(_label(tick_text, x=left - TICK_GAP_PX, y=y + FONT_PX * 0.35, text_anchor="end"))
    label_px = max(len(label) for label in labels) * CHAR_PX
    x_labels = []
    # The last label shifts inward to stay inside the viewBox; the spacing leaves room for that shift.
    edge_shift_px = max(0.0, label_px / 2 - PLOT_RIGHT_PX - plot.slot_px / 2)
    for j in _thinned_indices(len(labels), plot.slot_px, label_px + LABEL_GAP_PX + edge_shift_px):
        x = min(max(plot.x_centre(j), label_px / 2), width - label_px / 2)
        x_labels.append(_label(labels[j], x=x, y=bottom + FONT_PX + 6, text_anchor="middle"))
    parts = [
        _tag("g", _join(y_ticks), class_="chart-y-ticks"),
        _tag("line", class_="chart-axis", x1=left, y1=PLOT_TOP_PX, x2=left, y2=bottom),
        _tag("line", class_="chart-axis", x1=left, y1=bottom, x2=right, y2=bottom),
        _tag("g", _join(x_labels), class_="chart-x-labels"),
    ]
    return plot, _join(parts)


def _thinned_indices(num_labels: int, slot_px: float, min_spacing_px: float) -> list[int]:
    """Evenly spread label indices, first and last always, at most MAX_X_LABELS, no two closer than
    ``min_spacing_px``: rounding i·(n-1)/(count-1) leaves gaps of at least (n-1)//(count-1) slots."""
    if num_labels <= 2:
        return list(range(num_labels))
    count = 2
    for candidate in range(min(num_labels, MAX_X_LABELS), 2, -1):
        if (num_labels - 1) // (candidate - 1) * slot_px >= min_spacing_px:
            count = candidate
            break
    return [round(i * (num_labels - 1) / (count - 1)) for i in range(count)]


def _legend(series: Sequence[Series], left: float, width: int) -> Markup:
    """Swatch and name per series, from the plot's left edge; further left when that would run past
    the right edge (a narrow chart), never past the left one."""
    legend_px = sum(14 + len(one.name) * CHAR_PX + 16 for one in series) - 16
    items, x = [], max(LEGEND_MARGIN_PX, min(left, width - LEGEND_MARGIN_PX - legend_px))
    for index, one in enumerate(series):
        items.append(
            _tag("rect", class_=f"chart-series-{index}", x=x, y=LEGEND_Y_PX - 5, width=10, height=10)
        )
        items.append(_label(one.name, x=x + 14, y=LEGEND_Y_PX + 4))
        x += 14 + len(one.name) * CHAR_PX + 16
    return _tag("g", _join(items), class_="chart-legend")


def _label(text: str, **attrs: object) -> Markup:
    return _tag("text", text, class_="chart-label", font_size=FONT_PX, **attrs)


def _label_range(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{labels[0]} to {labels[-1]}"


def _empty_svg(chart_id: str, title: str, labels: Sequence[str], width: int, height: int) -> Markup:
    desc = f"{EMPTY_TEXT} ({_label_range(labels)})." if labels else f"{EMPTY_TEXT}."
    at = {"x": width / 2, "y": height / 2, "text_anchor": "middle", "font_size": FONT_PX + 2}
    return _svg(chart_id, title, desc, width, height, _tag("text", EMPTY_TEXT, class_="chart-empty", **at))


def _svg(chart_id: str, title: str, desc: str, width: int, height: int, body: Markup) -> Markup:
    heading = _tag("title", title, id=f"{chart_id}-title") + _tag("desc", desc, id=f"{chart_id}-desc")
    # "meet" keeps the aspect ratio, so CSS width:100%; height:auto scales the chart to its container.
    scaling = {"viewBox": f"0 0 {width} {height}", "preserveAspectRatio": "xMidYMid meet"}
    aria = {"role": "img", "aria_labelledby": f"{chart_id}-title", "aria_describedby": f"{chart_id}-desc"}
    root = {"xmlns": SVG_NS, "id": chart_id, "class_": "chart", "width": width, "height": height}
    return _tag("svg", heading + body, **root, **scaling, **aria)


def _tag(name: str, content: str = "", /, **attrs: object) -> Markup:
    """One element. ``class_`` -> class and ``text_anchor`` -> text-anchor; attribute values and
    plain-str content are escaped, Markup content is kept."""
    rendered = _join(
        Markup(' {}="{}"').format(key.rstrip("_").replace("_", "-"), _num(v) if isinstance(v, float) else v)
        for key, v in attrs.items()
    )
    if not content:
        return Markup("<{}{}/>").format(name, rendered)
    return Markup("<{}{}>{}</{}>").format(name, rendered, content, name)


def _join(parts: object) -> Markup:
    return Markup("").join(parts)


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text

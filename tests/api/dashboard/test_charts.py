"""SVG charts: geometry by hand from the plot-area constants, tick rule, escaping, CSP, empty state."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from itertools import pairwise

import pytest

from api.dashboard.charts import (
    CHAR_PX,
    EMPTY_TEXT,
    MAX_X_LABELS,
    PLOT_BOTTOM_PX,
    PLOT_LEFT_MIN_PX,
    PLOT_RIGHT_PX,
    PLOT_TOP_PX,
    Series,
    line_chart,
    stacked_bar_chart,
)

NS = "{http://www.w3.org/2000/svg}"
WIDTH, HEIGHT = 720, 240
PLOT_BOTTOM = HEIGHT - PLOT_BOTTOM_PX  # 212
PLOT_HEIGHT = HEIGHT - PLOT_TOP_PX - PLOT_BOTTOM_PX  # 180


def bars(labels, *series: Series, format_value=str, **kwargs) -> ET.Element:
    svg = stacked_bar_chart(
        chart_id="usage", title="Tokens", labels=labels, series=series, format_value=format_value, **kwargs
    )
    return ET.fromstring(str(svg))


def lines(labels, *series: Series, format_value=str, **kwargs) -> ET.Element:
    svg = line_chart(
        chart_id="rate", title="Hit rate", labels=labels, series=series, format_value=format_value, **kwargs
    )
    return ET.fromstring(str(svg))


def by_class(root: ET.Element, tag: str, css_class: str) -> list[ET.Element]:
    return [e for e in root.iter(NS + tag) if css_class in e.get("class", "").split()]


def group(root: ET.Element, css_class: str) -> ET.Element:
    (found,) = [g for g in root.iter(NS + "g") if g.get("class") == css_class]
    return found


def y_tick_texts(root: ET.Element) -> list[str]:
    return [t.text for t in group(root, "chart-y-ticks").iter(NS + "text")]


def test_stacked_heights_are_proportional_and_stack_in_series_order():
    root = bars(["a", "b"], Series("A", (2, 1)), Series("B", (4, None)))
    # Max stack 6 -> ticks 0,2,4,6, so the axis top is 6 and one unit is PLOT_HEIGHT / 6 = 30 px.
    unit_px = PLOT_HEIGHT / 6
    slot_px = (WIDTH - PLOT_LEFT_MIN_PX - PLOT_RIGHT_PX) / 2  # 320
    bar_px = slot_px * 0.7
    a_rects = list(group(root, "chart-series-0").iter(NS + "rect"))
    b_rects = list(group(root, "chart-series-1").iter(NS + "rect"))
    assert len(a_rects) == 2 and len(b_rects) == 1
    geometry = [tuple(float(r.get(k)) for k in ("x", "y", "width", "height")) for r in [*a_rects, *b_rects]]
    first_x = PLOT_LEFT_MIN_PX + (slot_px - bar_px) / 2  # 112
    assert geometry == [
        (first_x, PLOT_BOTTOM - 2 * unit_px, bar_px, 2 * unit_px),  # A at "a": 60 px from the axis
        (first_x + slot_px, PLOT_BOTTOM - 1 * unit_px, bar_px, 1 * unit_px),  # A at "b": 30 px
        (first_x, PLOT_BOTTOM - 6 * unit_px, bar_px, 4 * unit_px),  # B sits on A: top at the axis top
    ]
    assert PLOT_BOTTOM - 6 * unit_px == PLOT_TOP_PX


def test_zero_and_none_draw_no_rect():
    root = bars(["a", "b", "c"], Series("A", (0, None, 3)), Series("B", (1, 0, None)))
    assert len(list(group(root, "chart-series-0").iter(NS + "rect"))) == 1
    assert len(list(group(root, "chart-series-1").iter(NS + "rect"))) == 1


def test_each_rect_has_a_tooltip_with_the_formatted_value():
    root = bars(["May 1"], Series("Output", (1500,)), format_value=lambda v: f"{v:,} tokens")
    (rect,) = group(root, "chart-series-0").iter(NS + "rect")
    assert rect.find(NS + "title").text == "May 1 — Output: 1,500 tokens"


@pytest.mark.parametrize(
    ("values", "ticks"),
    [
        ((7,), ["0", "2", "4", "6", "8"]),
        ((950,), ["0", "200", "400", "600", "800", "1000"]),
        ((1000,), ["0", "200", "400", "600", "800", "1000"]),
        ((Decimal("0.9"),), ["0", "0.2", "0.4", "0.6", "0.8", "1"]),
        ((1,), ["0", "1", "2"]),  # ints: whole steps only, and at least 2 intervals
        ((12,), ["0", "5", "10", "15"]),  # ints skip the 2.5 step
        ((Decimal(12),), ["0", "2.5", "5", "7.5", "10", "12.5"]),
        ((3, 4), ["0", "1", "2", "3", "4"]),
    ],
)
def test_ticks_are_nice_and_the_top_covers_the_largest_stack(values, ticks):
    root = bars([str(i) for i in range(len(values))], Series("A", values))
    assert y_tick_texts(root) == ticks
    assert Decimal(ticks[-1]) >= max(values)


def test_top_tick_covers_the_sum_of_a_stack_not_the_largest_value():
    root = bars(["a", "b"], Series("A", (30, 10)), Series("B", (25, 40)))
    assert y_tick_texts(root) == ["0", "20", "40", "60"]


def test_format_value_receives_decimals_for_ticks_tooltips_and_totals():
    seen = []
    bars(["a"], Series("A", (3,)), format_value=lambda v: seen.append(v) or str(v))
    assert seen and all(type(v) is Decimal for v in seen)


def test_y_max_fixes_the_line_axis_top():
    root = lines(["a", "b"], Series("hit", (Decimal("0.3"), Decimal("0.35"))), y_max=Decimal(1))
    assert y_tick_texts(root) == ["0", "0.2", "0.4", "0.6", "0.8", "1"]


def test_text_is_escaped_and_round_trips():
    label, name = '<b>&"x"', "A & <B> 'q'"
    svg = str(
        stacked_bar_chart(
            chart_id="c", title="T <i>", labels=[label], series=[Series(name, (1,))], format_value=str
        )
    )
    assert "<b>" not in svg and "<B>" not in svg and "<i>" not in svg
    root = ET.fromstring(svg)
    assert group(root, "chart-x-labels").find(NS + "text").text == label
    assert [t.text for t in group(root, "chart-legend").iter(NS + "text")] == [name]
    assert root.find(NS + "title").text == "T <i>"


@pytest.mark.parametrize(
    "root",
    [
        bars(["a", "b"], Series("A", (1, 2)), Series("B", (3, None))),
        lines(["a", "b", "c"], Series("A", (1, None, 2))),
        bars(["a"], Series("A", (None,))),
    ],
    ids=["bars", "lines", "empty"],
)
def test_no_style_attribute_or_element(root):
    for element in root.iter():
        assert "style" not in element.attrib
        assert element.tag != NS + "style"


def test_none_breaks_a_line_into_two_subpaths():
    root = lines(["a", "b", "c", "d"], Series("A", (1, 2, None, 4)))
    (path,) = by_class(root, "path", "chart-line")
    assert path.get("class") == "chart-line chart-series-0"
    commands = re.findall(r"[ML]", path.get("d"))
    assert commands == ["M", "L", "M"]
    points = by_class(root, "circle", "chart-point")
    assert len(points) == 3
    assert [p.find(NS + "title").text for p in points] == ["a — A: 1", "b — A: 2", "d — A: 4"]


def test_line_points_sit_on_the_value_scale_and_clip_at_y_max():
    values = (Decimal("0.5"), Decimal(1), Decimal("1.2"))
    root = lines(["a", "b", "c"], Series("A", values), y_max=Decimal(1))
    centres = [float(p.get("cy")) for p in by_class(root, "circle", "chart-point")]
    assert centres == [PLOT_BOTTOM - PLOT_HEIGHT / 2, PLOT_TOP_PX, PLOT_TOP_PX]


def test_many_labels_are_thinned_keeping_first_and_last_without_overlap():
    labels = [f"2024-05-{day:02d}" for day in range(1, 32)] + [f"2024-06-{day:02d}" for day in range(1, 30)]
    root = bars(labels, Series("A", tuple(range(len(labels)))))
    drawn = list(group(root, "chart-x-labels").iter(NS + "text"))
    assert 2 < len(drawn) <= MAX_X_LABELS
    assert drawn[0].text == labels[0] and drawn[-1].text == labels[-1]
    xs = [float(t.get("x")) for t in drawn]
    label_px = len(labels[0]) * CHAR_PX
    assert all(right - left >= label_px for left, right in pairwise(xs))
    assert xs[0] - label_px / 2 >= 0 and xs[-1] + label_px / 2 <= WIDTH


def test_short_labels_are_thinned_to_the_cap():
    labels = [str(day) for day in range(1, 61)]
    root = bars(labels, Series("A", (1,) * len(labels)))
    drawn = [t.text for t in group(root, "chart-x-labels").iter(NS + "text")]
    assert len(drawn) == MAX_X_LABELS
    assert drawn[0] == "1" and drawn[-1] == "60"


def test_few_labels_are_all_drawn():
    labels = ["Mon", "Tue", "Wed", "Thu", "Fri"]
    root = bars(labels, Series("A", (1, 2, 3, 4, 5)))
    assert [t.text for t in group(root, "chart-x-labels").iter(NS + "text")] == labels


def test_legend_has_one_swatch_per_series_above_the_plot():
    root = bars(
        ["a"], Series("Cache-hit input", (1,)), Series("Cache-miss input", (2,)), Series("Output", (3,))
    )
    legend = group(root, "chart-legend")
    swatches = list(legend.iter(NS + "rect"))
    assert [s.get("class") for s in swatches] == ["chart-series-0", "chart-series-1", "chart-series-2"]
    assert [t.text for t in legend.iter(NS + "text")] == ["Cache-hit input", "Cache-miss input", "Output"]
    assert all(float(s.get("y")) + float(s.get("height")) < PLOT_TOP_PX for s in swatches)
    assert all(float(t.get("y")) < PLOT_TOP_PX for t in legend.iter(NS + "text"))
    texts = list(legend.iter(NS + "text"))
    for text, next_swatch in zip(texts[:-1], swatches[1:], strict=True):
        assert float(text.get("x")) + len(text.text) * CHAR_PX < float(next_swatch.get("x"))


@pytest.mark.parametrize(
    "root",
    [
        bars(["a", "b"], Series("A", (None, None))),
        bars(["a", "b"], Series("A", (0, 0)), Series("B", (None, 0))),
        bars([], Series("A", ())),
        bars(["a"]),
        lines(["a", "b"], Series("A", (None, 0))),
        lines([], y_max=Decimal(1)),
    ],
)
def test_empty_state_is_a_same_sized_svg_with_a_message(root):
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    (message,) = by_class(root, "text", "chart-empty")
    assert message.text == EMPTY_TEXT
    assert float(message.get("x")) == WIDTH / 2 and message.get("text-anchor") == "middle"
    assert not [e for e in root.iter() if e.tag in (NS + "rect", NS + "path", NS + "line", NS + "circle")]


@pytest.mark.parametrize("chart", [stacked_bar_chart, line_chart])
def test_same_input_gives_the_same_string(chart):
    def render() -> str:
        series = [Series("A", (1, None, Decimal("2.5"))), Series("B", (3, 1, 0))]
        return str(chart(chart_id="x", title="t", labels=["a", "b", "c"], series=series, format_value=str))

    assert render() == render()


@pytest.mark.parametrize(
    "root",
    [
        bars(["a", "b"], Series("A", (1, 2))),
        lines(["a", "b"], Series("A", (1, 2))),
        bars(["a"], Series("A", (0,))),
    ],
    ids=["bars", "lines", "empty"],
)
def test_svg_root_is_an_accessible_scalable_image(root):
    assert root.get("role") == "img" and root.get("class") == "chart"
    assert root.get("id") in {"usage", "rate"}  # the chart_id, for per-chart CSS such as #chart-cost
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"
    assert root.get("preserveAspectRatio") == "xMidYMid meet"
    ids = {e.get("id"): e for e in root.iter() if e.get("id")}
    assert ids[root.get("aria-labelledby")].tag == NS + "title"
    assert ids[root.get("aria-describedby")].tag == NS + "desc"


def test_desc_summarises_the_label_range_and_series_totals():
    root = bars(["May 1", "May 2", "May 3"], Series("In", (1, 2, None)), Series("Out", (5, None, 5)))
    assert root.find(NS + "desc").text == "May 1 to May 3. Totals: In 3; Out 10."


def test_coordinates_are_rounded_to_two_decimals():
    root = bars(["a", "b", "c"], Series("A", (1, 2, 3)), Series("B", (Decimal("0.7"), 1, 1)))
    numbers = [v for e in root.iter() for k, v in e.attrib.items() if k in {"x", "y", "width", "height"}]
    assert numbers and all(re.fullmatch(r"-?\d+(\.\d{1,2})?", v) for v in numbers)


def test_mismatched_lengths_and_negative_values_are_all_reported():
    with pytest.raises(ValueError) as raised:
        bars(["a", "b"], Series("Short", (1,)), Series("Negative", (1, -2)))
    assert "'Short' has 1 values for 2 labels" in str(raised.value)
    assert "'Negative'" in str(raised.value)


def test_a_narrow_chart_keeps_its_legend_inside():
    names = ("Cache-hit input", "Cache-miss input", "Output")
    root = bars(["a", "b"], *(Series(name, (1, 2)) for name in names), width=340)
    legend = group(root, "chart-legend")
    texts = list(legend.iter(NS + "text"))
    swatches = list(legend.iter(NS + "rect"))
    assert float(swatches[0].get("x")) >= 0
    assert float(texts[-1].get("x")) + len(texts[-1].text) * CHAR_PX <= 340
    wide = group(bars(["a", "b"], *(Series(name, (1, 2)) for name in names)), "chart-legend")
    assert float(next(wide.iter(NS + "rect")).get("x")) == PLOT_LEFT_MIN_PX  # wide: from the plot's edge

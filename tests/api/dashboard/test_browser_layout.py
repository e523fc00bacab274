"""The dashboard as a person sees it, at 1280 and 390 px: the corrected batch counts, tables that fit
their box, charts whose labels stay readable on a phone, cards that keep an amount on one line, and
the navigation on a 404. Headless Chromium driven by Playwright, as in ``test_browser``; screenshots
of every view go to the same artifacts folder.
"""

# ruff: noqa: F811 - the fixtures imported from test_browser are named again as test arguments

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.dashboard.batch_states import BatchStates
from tests.api.dashboard.test_browser import browser, screenshot, server, settings  # noqa: F401 - fixtures
from tests.api.dashboard.world import World

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)
# How many line boxes an element's text takes (1: it did not wrap).
LINES_OF = (
    "el => { const r = document.createRange(); r.selectNodeContents(el); return r.getClientRects().length; }"
)
SIDEWAYS = "document.documentElement.scrollWidth - window.innerWidth"


@pytest.fixture
def open_as_alice(browser, server: str, world: World) -> Iterator:
    """``open_as_alice(width)``: a tab signed in as alice at that width; console errors fail the test."""
    contexts, tabs = [], []

    def do(width: int):
        context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
        tab = context.new_page()
        tab.console_errors = []
        tab.on("console", lambda message: message.type == "error" and tab.console_errors.append(message.text))
        tab.goto(f"{server}/dashboard/login")
        tab.get_by_label("API key").fill(world.alice_secret)
        tab.get_by_role("button", name="Sign in").click()
        tab.wait_for_url(f"{server}/dashboard")
        contexts.append(context)
        tabs.append(tab)
        return tab

    yield do
    for tab in tabs:
        assert tab.console_errors == []
    for context in contexts:
        context.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_batch_pages_show_completed_failed_and_not_run(
    open_as_alice, server: str, states: BatchStates, world: World, width: int
) -> None:
    tab = open_as_alice(width)
    tab.goto(f"{server}/dashboard/batches/{states.cancelled_id}")
    assert tab.locator('[data-field="progress"]').inner_text() == "1 / 300"
    assert tab.locator("progress").evaluate("bar => bar.value") == 0
    assert tab.locator("#request-outcomes").inner_text() == "Failed: 0 · Not run (not billed): 299 cancelled"
    cost = tab.locator('dd[data-field="cost"]')
    assert cost.inner_text() == "$0.000051" and cost.evaluate(LINES_OF) == 1
    assert tab.evaluate(SIDEWAYS) <= 0
    screenshot(tab, f"batch-cancelled-{width}")
    tab.goto(f"{server}/dashboard/batches/{states.failed_id}")
    assert tab.locator('[data-field="progress"]').inner_text() == "none ran"
    assert tab.locator("progress").evaluate("bar => bar.value") == 0
    assert "failed before any request ran" in tab.locator("#files-note").inner_text()
    screenshot(tab, f"batch-failed-{width}")
    for name, batch_id in (("completed", states.completed_id), ("running", world.alice_running_batch_id)):
        tab.goto(f"{server}/dashboard/batches/{batch_id}")
        assert tab.evaluate(SIDEWAYS) <= 0, name
        for card in tab.locator(".card dd").all():
            if card.get_attribute("data-field") in ("cost", "tokens", "hit_rate"):
                assert card.evaluate(LINES_OF) == 1, (name, card.inner_text())
        screenshot(tab, f"batch-{name}-{width}")
    tab.goto(f"{server}/dashboard/batches")
    row = tab.locator(f'tr[data-batch-id="{states.cancelled_id}"]')
    assert row.locator('[data-field="progress"]').inner_text() == "1 / 300"
    assert row.locator('[data-field="outcomes"]').inner_text() == "299 cancelled"
    assert tab.evaluate(SIDEWAYS) <= 0
    screenshot(tab, f"batches-states-{width}")


def test_the_by_batch_table_fits_its_box_at_1280(open_as_alice, server: str, states: BatchStates) -> None:
    tab = open_as_alice(1280)
    tab.goto(f"{server}/dashboard?range=30d")
    box = tab.locator("#by-batch").locator("xpath=..")  # the .table-wrap that would scroll
    assert box.evaluate("wrap => wrap.scrollWidth - wrap.clientWidth") <= 0
    last_heading = tab.locator("#by-batch thead th").last
    assert last_heading.inner_text().startswith("Saved by cache")
    heading_right = last_heading.evaluate("th => th.getBoundingClientRect().right")
    assert heading_right <= box.evaluate("wrap => wrap.getBoundingClientRect().right") + 0.5
    screenshot(tab, "usage-states-1280")


def test_chart_labels_stay_readable_on_a_phone(open_as_alice, server: str) -> None:
    tab = open_as_alice(390)
    tab.goto(f"{server}/dashboard?range=30d")
    for chart_id in ("chart-tokens", "chart-cost", "chart-hit-rate"):
        assert not tab.locator(f"svg#{chart_id}").is_visible()
        narrow = tab.locator(f"svg#{chart_id}-narrow")
        assert narrow.is_visible()
        heights = narrow.locator("text.chart-label").evaluate_all(
            "labels => labels.map(l => l.getBoundingClientRect().height)"
        )
        assert heights and min(heights) >= 10, (chart_id, heights)  # 11 px type, drawn near its own size
    assert tab.evaluate(SIDEWAYS) <= 0
    screenshot(tab, "usage-charts-390")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_404_keeps_the_navigation(open_as_alice, server: str, width: int) -> None:
    tab = open_as_alice(width)
    response = tab.goto(f"{server}/dashboard/no-such-page")
    assert response.status == 404
    # Chromium logs the page's own 404 as a console error; that one is expected here.
    tab.console_errors[:] = [text for text in tab.console_errors if "status of 404" not in text]
    assert tab.get_by_role("heading", name="Not found").is_visible()
    navigation = tab.get_by_role("navigation", name="Main")
    assert navigation.get_by_role("link", name="Batches").is_visible()
    assert tab.get_by_role("button", name="Sign out").is_visible()
    screenshot(tab, f"not-found-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_invoices_and_prices_read_alike(open_as_alice, server: str, width: int) -> None:
    tab = open_as_alice(width)
    tab.goto(f"{server}/dashboard/invoices")
    assert "upto_256k" not in tab.locator("main").inner_text()
    line_cell = tab.locator('#upcoming-lines td[data-label="Prompt length"]').first
    price_cell = tab.locator('#price-sheet td[data-label="Prompt length"]').first
    assert line_cell.inner_text() == price_cell.inner_text() == "up to 262,144 tokens"
    assert tab.locator("#price-sheet th[data-served]").first.inner_text().endswith("served here: tiny-test")
    assert tab.evaluate(SIDEWAYS) <= 0
    screenshot(tab, f"invoices-states-{width}")

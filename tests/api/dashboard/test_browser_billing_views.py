"""The invoice PDF download and the operators' serving-cost page in headless Chromium, at 1280 and
390 px: the button downloads a PDF, the page fits the screen and shows every cost; screenshots go
to the artifacts folder as in ``test_browser``."""

# ruff: noqa: F811 - the fixtures imported from test_browser are named again as test arguments

from __future__ import annotations

import pytest

from tests.api.dashboard.test_browser import browser, page, screenshot, server, settings  # noqa: F401 - fixtures
from tests.api.dashboard.world import ADMIN_KEY, World

pytestmark = pytest.mark.browser

SIDEWAYS = "document.documentElement.scrollWidth - window.innerWidth"


def test_the_invoice_page_downloads_its_pdf(page, server: str, world: World) -> None:
    page.goto(f"{server}/dashboard/invoices")
    page.locator("#past-invoices a").first.click()
    with page.expect_download() as caught:
        page.get_by_role("link", name="Download PDF").click()
    download = caught.value
    assert download.suggested_filename.startswith(f"invoice-{world.closed_period}-alice-inv_")
    with open(download.path(), "rb") as pdf:
        assert pdf.read(5) == b"%PDF-"


@pytest.mark.parametrize("width", (1280, 390))
def test_the_serving_cost_page_fits_and_shows_every_cost(browser, server: str, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    tab = context.new_page()
    errors = []
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.goto(f"{server}/dashboard/login")
    tab.get_by_label("API key").fill(ADMIN_KEY)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{server}/dashboard/admin")
    tab.get_by_role("navigation", name="Main").get_by_role("link", name="Serving cost").click()
    tab.get_by_label("Hourly price").fill("2.50")
    tab.get_by_role("button", name="Compute").click()
    tab.wait_for_url("**hourly_price=2.50**")
    costs = tab.locator("#serving-cost td[data-cost]")
    assert costs.count() == 3 and all(text.startswith("$") for text in costs.all_inner_texts())
    assert tab.locator("#serving-margins tbody tr").count() == 12  # 2 prompt lengths x 3 classes x 2 bands
    assert tab.evaluate(SIDEWAYS) <= 0
    screenshot(tab, f"serving-cost-{width}")
    assert errors == []
    context.close()

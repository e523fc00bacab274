"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright.

Each test signs in through the form, as a person would. Screenshots of the main views are saved
under ``var/test-artifacts/dashboard/`` (override with HYBATCH_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from api.dashboard.bench import CHROMIUM, CHROMIUM_ARGS, serve_in_thread
from hybatch.db import make_engine
from hybatch.models import Batch
from hybatch.settings import REPO_ROOT, Settings
from tests.api.dashboard.test_pages import api_buckets, summed, token_bars
from tests.api.dashboard.world import World

pytestmark = [pytest.mark.browser, pytest.mark.dated]

ARTIFACTS = Path(os.environ.get("HYBATCH_TEST_ARTIFACTS", REPO_ROOT / "var" / "test-artifacts")) / "dashboard"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if os.environ.get("HYBATCH_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (HYBATCH_REQUIRE_SERVICES=1 forbids skipping)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """The embedded default's database (SQLite); the HTTP tests cover Postgres."""
    from tests.api.dashboard.world import ADMIN_KEY

    return Settings(
        data_dir=tmp_path / "var", database_url=sqlite_url, model_name="tiny-test", admin_key=ADMIN_KEY
    )


@pytest.fixture
def server(settings: Settings, world: World) -> Iterator[str]:
    app = create_app(settings, enqueue=lambda batch_id: None)
    with serve_in_thread(app) as base_url:
        yield base_url
    app.state.engine.dispose()


@pytest.fixture
def page(browser, server: str, world: World) -> Iterator:
    """A signed-in page for alice that records every request and console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.requests = []
    tab.console_errors = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.on("console", lambda message: message.type == "error" and tab.console_errors.append(message.text))
    tab.goto(f"{server}/dashboard")
    assert "/dashboard/login" in tab.url
    tab.get_by_label("API key").fill(world.alice_secret)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{server}/dashboard")
    yield tab
    # No request left the server, and nothing was blocked by the content security policy.
    assert all(url.startswith(server) for url in tab.requests), [
        u for u in tab.requests if not u.startswith(server)
    ]
    assert tab.console_errors == []
    context.close()


def screenshot(tab, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _number(text: str) -> Decimal:
    return Decimal(re.sub(r"[^0-9.\-]", "", text))


def test_usage_page_numbers_equal_the_api_and_charts_render(page, server: str, world: World) -> None:
    page.get_by_label("Range").select_option("7d")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*range=7d.*"))
    caption = page.locator("#range-caption")
    start, end = int(caption.get_attribute("data-start")), int(caption.get_attribute("data-end"))
    with httpx.Client(base_url=server) as api:
        buckets = api_buckets(api, world.alice_secret, start, end, "1d")
    expected = summed(buckets)
    shown = {
        name: page.locator(f'[data-metric="{name}"]').inner_text()
        for name in ("requests", "cache_hit_input_tokens", "cache_miss_input_tokens", "output_tokens", "cost")
    }
    assert _number(shown["requests"]) == expected["requests"] == 120
    assert _number(shown["cache_hit_input_tokens"]) == expected["hit"]
    assert _number(shown["cache_miss_input_tokens"]) == expected["miss"]
    assert _number(shown["output_tokens"]) == expected["output"]
    assert shown["cost"].startswith("$")
    assert abs(_number(shown["cost"]) - expected["cost"]) < Decimal("0.005")  # shown rounded to cents
    for chart_id in ("chart-tokens", "chart-cost", "chart-hit-rate"):
        chart = page.locator(f"svg#{chart_id}")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 80
    assert page.locator("svg#chart-tokens rect > title").count() == token_bars(buckets) >= 3  # with tooltips
    bar = page.locator("svg#chart-tokens g.chart-series-0 rect").first.bounding_box()
    assert bar is not None and bar["height"] > 0
    assert page.locator("svg#chart-hit-rate path.chart-line").count() == 1
    screenshot(page, "usage-1280")


def test_breakdown_sorts_by_clicking_a_heading(page, server: str) -> None:
    # This month: alice's three batches on any day (the default 30 days reach into last month early on).
    page.goto(f"{server}/dashboard?range=month")
    table = page.locator("#by-batch")
    table.get_by_role("button", name="Requests").click()
    assert table.locator("th", has_text="Requests").get_attribute("aria-sort") == "ascending"
    values = [
        int(v)
        for v in table.locator('tbody td[data-field="requests"]').evaluate_all(
            "cells => cells.map(c => c.dataset.sortValue)"
        )
    ]
    assert values == sorted(values) and len(values) == 3
    table.get_by_role("button", name="Output").click()
    table.get_by_role("button", name="Output").click()
    outputs = [
        int(v)
        for v in table.locator('tbody td[data-field="output_tokens"]').evaluate_all(
            "cells => cells.map(c => c.dataset.sortValue)"
        )
    ]
    assert outputs == sorted(outputs, reverse=True)


def test_batches_update_live_without_reload(page, server: str, settings: Settings, world: World) -> None:
    page.get_by_role("link", name="Batches").click()
    row = page.locator(f'tr[data-batch-id="{world.alice_running_batch_id}"]')
    assert row.locator('[data-field="progress"]').inner_text() == "10 / 40"
    page.evaluate("window.__notReloaded = true")
    screenshot(page, "batches-1280")
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.update(Batch)
            .where(Batch.id == world.alice_running_batch_id)
            .values(completed_requests=30, output_tokens=2400)
        )
    engine.dispose()
    row.locator('[data-field="progress"]', has_text="30 / 40").wait_for(timeout=15_000)
    assert row.locator("progress").evaluate("bar => bar.value") == 75
    assert page.evaluate("window.__notReloaded") is True


def test_cancel_a_running_batch_from_its_page(page, settings: Settings, world: World) -> None:
    page.get_by_role("link", name="Batches").click()
    page.get_by_role("link", name=world.alice_running_batch_id).click()
    screenshot(page, "batch-1280")
    page.get_by_role("link", name="Cancel this batch…").click()
    assert "can no longer" not in page.content()
    page.get_by_role("button", name="Yes, cancel the batch").click()
    page.locator('[data-field="status"]', has_text="Cancelling").first.wait_for()
    engine = make_engine(settings.database_url)
    with engine.connect() as connection:
        status = connection.scalar(sa.select(Batch.status).where(Batch.id == world.alice_running_batch_id))
    engine.dispose()
    assert status.value == "cancelling"
    assert page.get_by_role("link", name="Cancel this batch…").count() == 0


def test_download_an_export_and_an_output_file(page, server: str, world: World) -> None:
    page.get_by_role("link", name="Invoices").click()
    screenshot(page, "invoices-1280")
    with page.expect_download() as download_info:
        page.get_by_role("link", name=f"CSV export for {world.closed_period}").click()
    download = download_info.value
    assert download.suggested_filename == f"hybatch-billing-{world.closed_period}.csv"
    with httpx.Client(base_url=server) as api:
        expected = api.get(
            "/v1/billing/exports",
            params={"period": str(world.closed_period)},
            headers={"Authorization": f"Bearer {world.alice_secret}"},
        ).content
    assert Path(download.path()).read_bytes() == expected
    page.goto(f"{server}/dashboard/batches/{world.alice_finished_batch_id}")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download output").click()
    assert Path(download_info.value.path()).read_bytes() == b'{"ok": 1}\n'


def test_phone_width_and_keyboard(page, server: str, world: World) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    finished_batch = f"/dashboard/batches/{world.alice_finished_batch_id}"  # its prefix-cache table
    for path in ("/dashboard", "/dashboard/batches", "/dashboard/invoices", finished_batch):
        page.goto(server + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390px"
        screenshot(page, f"phone{path.replace('/', '-')}")
    page.goto(server + "/dashboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("document.activeElement.name || document.activeElement.textContent.trim()")
        )
    assert "range" in focused and "Show" in focused


def test_operator_view_in_the_browser(browser, server: str) -> None:
    from tests.api.dashboard.world import ADMIN_KEY

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.goto(f"{server}/dashboard/login")
    tab.get_by_label(re.compile("API key")).fill(ADMIN_KEY)
    tab.get_by_role("button", name="Sign in").click()
    tab.wait_for_url(f"{server}/dashboard/admin")
    names = tab.locator("#accounts tbody th").all_inner_texts()
    assert sorted(names) == ["alice", "bob"]
    assert ADMIN_KEY not in tab.content()
    screenshot(tab, "admin-1280")
    context.close()


def test_webhooks_page_in_the_browser(page, server: str, world: World, settings: Settings) -> None:
    import sqlalchemy as sa

    from hybatch import webhooks
    from hybatch.batch_lifecycle import UNFINISHED, move_batch
    from hybatch.db import make_session_factory
    from hybatch.models import BatchStatus, WebhookDelivery, utc_now

    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        webhooks.create_endpoint(
            session,
            world.alice_account_id,
            url="https://hooks.example.com/hybatch/batches/events",
            event_types=None,
            name="batch events",
            allow_private=True,
        )
        move_batch(session, world.alice_running_batch_id, BatchStatus.CANCELLED, from_statuses=UNFINISHED)
        session.commit()
        session.execute(
            sa.update(WebhookDelivery).values(
                attempts=2, last_attempt_at=utc_now(), last_status_code=503, last_error="HTTP 503"
            )
        )
        session.commit()
    engine.dispose()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{server}/dashboard/webhooks")
        assert page.get_by_role("heading", name="batch events").is_visible()
        assert page.get_by_text("retrying").is_visible()
        page.screenshot(path=str(ARTIFACTS / f"webhooks-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow} px wider than the {width} px window"
    assert page.console_errors == []

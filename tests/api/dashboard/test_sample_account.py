"""``hybatch accounts sample``: the sample's span is the dashboard's "Last N days", so the numbers agree."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from billing.commands import sample_account, sample_span
from hybatch.settings import Settings

pytestmark = pytest.mark.dated  # builds its data relative to now


def _requests_shown(client: TestClient, query: str) -> int:
    page = client.get(f"/dashboard?{query}").text
    return int(re.search(r'data-metric="requests" data-value="(\d+)"', page).group(1))


@pytest.mark.parametrize(("days", "view"), [(30, "30d"), (7, "7d"), (1, "today")])
def test_the_usage_page_shows_every_sample_request(
    sign_in: Callable[[str], TestClient], settings: Settings, days: int, view: str
) -> None:
    printed = sample_account(settings, "demo", 1_000, days)
    assert printed[0].startswith("created account demo with 1,000 sample requests in 5 batches from ")
    client = sign_in(printed[-1].strip())
    assert _requests_shown(client, f"range={view}") == 1_000
    if view != "today":
        assert f"“{'Last ' + str(days) + ' days'}” shows all of them today" in printed[0]


def test_the_span_starts_at_the_views_first_midnight() -> None:
    now = datetime(2026, 12, 2, 0, 0, 30, tzinfo=UTC)
    assert sample_span(now, 30) == (datetime(2026, 11, 3, tzinfo=UTC), now)
    assert sample_span(now, 1) == (datetime(2026, 12, 2, tzinfo=UTC), now)

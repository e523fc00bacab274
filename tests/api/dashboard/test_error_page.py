"""The dashboard's error pages keep the navigation for a signed-in viewer, and only for one."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.api.dashboard.world import ADMIN_KEY, World

NAV = '<nav aria-label="Main">'


def test_a_signed_in_developer_keeps_the_navigation_on_a_404(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    for path in (
        "/dashboard/nope",
        f"/dashboard/batches/{world.bob_batch_id}",
        "/dashboard/invoices/inv_none",
    ):
        response = client.get(path)
        assert response.status_code == 404 and "Not found" in response.text, path
        assert NAV in response.text and 'href="/dashboard/batches"' in response.text, path
        assert "Sign out" in response.text and "alice" in response.text


def test_an_operator_keeps_the_operator_navigation(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    response = sign_in(ADMIN_KEY).get("/dashboard/nope")
    assert response.status_code == 404 and NAV in response.text and 'href="/dashboard/admin"' in response.text


def test_nobody_signed_in_gets_no_navigation(browser_client: TestClient, world: World) -> None:
    response = browser_client.get("/dashboard/nope")
    assert response.status_code == 404 and NAV not in response.text and "Sign out" not in response.text

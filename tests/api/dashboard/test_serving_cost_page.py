"""``/dashboard/admin/serving-cost``: operators only; the inputs stated and the costs and margins
computed from them, against hand-computed figures; bad figures listed on the page."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from tests.api.dashboard.world import ADMIN_KEY, World

# $2.50 an hour, prefill 6,250 and decode 1,000 tokens/s, hits 250,000 / 125,000 / 50,000 tokens/s
# (device / host / disk) at the shipped shares 90% / 8% / 2%: per 1M tokens, miss 1/9, output
# 25/36, hit 0.9/360 + 0.08/180 + 0.02/72 (worked out in tests/billing/test_serving_cost.py).
FORM = {
    "hourly_price": "2.50",
    "prefill_tokens_per_s": "6250",
    "decode_tokens_per_s": "1000",
    "hit_tps.device": "250000",
    "hit_tps.host": "125000",
    "hit_tps.disk": "50000",
    "hit_share.device": "0.90",
    "hit_share.host": "0.08",
    "hit_share.disk": "0.02",
}


def _costs(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-token-class="(\w+)">.*?data-cost="([-\d.]+)"', page, re.S))


def test_operators_see_costs_and_margins_from_the_stated_inputs(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    operator = sign_in(ADMIN_KEY)
    assert 'href="/dashboard/admin/serving-cost"' in operator.get("/dashboard/admin").text
    page = operator.get("/dashboard/admin/serving-cost?" + urlencode(FORM)).text
    assert _costs(page) == {
        "cache_hit_input": "0.003222",
        "cache_miss_input": "0.111111",
        "output": "0.694444",
    }
    assert "device $0.002778, host $0.005556, disk $0.013889" in page
    assert "Schedule <strong>default@2025-01</strong>" in page
    # 2.10 - 25/36 = 1.405555... -> 1.405556, 66.9% of the price
    assert re.search(r'data-margin="1.405556">\$1.405556</td>\s*<td[^>]*>66.9%</td>', page)
    assert page.count('<span class="badge">given</span>') == 3  # hourly price, prefill, decode
    shipped = operator.get("/dashboard/admin/serving-cost").text
    assert "no GPU" in shipped and '<span class="badge">given</span>' not in shipped


def test_bad_figures_are_listed(sign_in: Callable[[str], TestClient], world: World) -> None:
    operator = sign_in(ADMIN_KEY)
    response = operator.get("/dashboard/admin/serving-cost?utilization=0&hit_share.disk=0.5&account=nobody")
    assert response.status_code == 400 and "No account named &#39;nobody&#39;." in response.text
    response = operator.get("/dashboard/admin/serving-cost?utilization=0&hit_share.disk=0.5")
    assert response.status_code == 400
    assert "utilization: must be above 0, not 0" in response.text
    assert "cache_hit_shares: must add up to 1, not 1.48" in response.text


def test_developers_do_not_see_it(sign_in: Callable[[str], TestClient], world: World) -> None:
    assert sign_in(world.alice_secret).get("/dashboard/admin/serving-cost").status_code == 404

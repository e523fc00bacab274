"""``/v1/usage``'s own parameter checks at the edge (what the usage holds: tests/billing/test_usage.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import Headers, assert_openai_error


@pytest.mark.parametrize(
    "query", [{"start_time": -1}, {"start_time": 10**15}, {"start_time": 0, "end_time": 10**15}]
)
def test_times_outside_what_a_date_can_hold_are_a_400_not_a_500(
    client: TestClient, alice: Headers, query: dict[str, int]
) -> None:
    response = client.get("/v1/usage", headers=alice, params=query)
    assert_openai_error(response, 400, code="invalid_value")


def test_the_last_representable_second_is_accepted(client: TestClient, alice: Headers) -> None:
    response = client.get("/v1/usage", headers=alice, params={"start_time": 0, "end_time": 253_402_300_799})
    assert response.status_code == 200, response.text

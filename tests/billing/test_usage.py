"""GET /v1/usage: OpenAI-shaped buckets of the caller's usage, grouped, paged, with cost."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from hybatch.batch_results import record_success
from hybatch.models import Batch, UsageRecord
from hybatch.result_lines import LinePrice, TokenUsage
from tests.billing.ledger import add_usage, at

DAY = 86_400
START = int(at("2026-03-01 00:00").timestamp())


def _priced(
    session: Session, customer, custom_id: str, amount: str, when: str, *, hit: int, miss: int, out: int
):
    """A finished request as the worker records it: result line with x_billing + usage row."""
    batch = session.get(Batch, customer.batch_id)
    line = {"id": custom_id, "custom_id": custom_id, "response": {}, "error": None}
    line["x_billing"] = {"token_classes": {}, "amount": amount, "currency": "usd", "price_version": "v"}
    usage = TokenUsage(cache_hit_input_tokens=hit, cache_miss_input_tokens=miss, output_tokens=out)
    price = LinePrice(Decimal(amount), "usd", "v")
    record_success(session, batch, custom_id=custom_id, line_number=1, line=line, usage=usage, price=price)
    session.flush()
    record = session.query(UsageRecord).filter_by(batch_id=batch.id, custom_id=custom_id).one()
    record.created_at = at(when)


def test_daily_buckets_grouped_and_scoped(api, caller, session: Session) -> None:
    alice, customer = caller("alice")
    _, other = caller("bob")
    _priced(session, customer, "a", "0.001", "2026-03-01 10:00", hit=10, miss=5, out=7)
    _priced(session, customer, "b", "0.0025", "2026-03-01 23:59", hit=0, miss=4, out=1)
    add_usage(
        session, customer, at("2026-03-03 00:00"), hit=1, miss=2, out=3, model="other-model"
    )  # unpriced
    add_usage(session, other, at("2026-03-01 12:00"), hit=100, miss=100, out=100)  # bob: never shown
    session.commit()
    page = api.get(
        f"/v1/usage?start_time={START}&end_time={START + 3 * DAY}&bucket_width=1d", headers=alice
    ).json()
    assert page["object"] == "page" and page["has_more"] is False and page["next_page"] is None
    assert [(b["object"], b["start_time"], b["end_time"], len(b["results"])) for b in page["data"]] == [
        ("bucket", START, START + DAY, 1),
        ("bucket", START + DAY, START + 2 * DAY, 0),
        ("bucket", START + 2 * DAY, START + 3 * DAY, 1),
    ]
    first = page["data"][0]["results"][0]
    assert first == {
        "object": "organization.usage.completions.result",
        "input_tokens": 19,
        "input_cached_tokens": 10,
        "output_tokens": 8,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": 2,
        "project_id": None,
        "user_id": None,
        "api_key_id": None,
        "model": None,
        "batch": None,
        "cache_hit_input_tokens": 10,
        "cache_miss_input_tokens": 9,
        "amount": {"value": "0.0035", "currency": "usd"},
        "unpriced_requests": 0,
    }
    third = page["data"][2]["results"][0]
    assert third["amount"] == {"value": "0", "currency": "usd"} and third["unpriced_requests"] == 1

    grouped = api.get(
        f"/v1/usage?start_time={START}&end_time={START + 3 * DAY}&group_by=model&group_by=api_key",
        headers=alice,
    ).json()
    results = grouped["data"][2]["results"]
    assert [(r["model"], r["api_key_id"], r["batch"]) for r in results] == [
        ("other-model", customer.api_key_id, None)
    ]
    by_batch = api.get(
        f"/v1/usage?start_time={START}&end_time={START + DAY}&group_by[]=batch", headers=alice
    ).json()
    assert by_batch["data"][0]["results"][0]["batch"] == customer.batch_id


def test_hourly_pages_and_bad_parameters(api, caller, session: Session) -> None:
    alice, customer = caller("alice")
    add_usage(session, customer, at("2026-03-01 05:30"), miss=3, out=4)
    session.commit()
    url = f"/v1/organization/usage/completions?start_time={START}&end_time={START + DAY}&bucket_width=1h&limit=4"
    first = api.get(url, headers=alice).json()
    assert len(first["data"]) == 4 and first["has_more"] and first["next_page"] == str(START + 4 * 3600)
    second = api.get(url + f"&page={first['next_page']}", headers=alice).json()
    assert second["data"][0]["start_time"] == START + 4 * 3600
    assert [len(b["results"]) for b in second["data"]] == [0, 1, 0, 0]
    for query, param in [
        ("bucket_width=1w", "bucket_width"),
        ("group_by=project", "group_by"),
        ("limit=32", "limit"),
        (f"end_time={START}", "end_time"),
        ("page=12", "page"),
    ]:
        response = api.get(f"/v1/usage?start_time={START}&{query}", headers=alice)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, query
    assert api.get(f"/v1/usage?start_time={START}").status_code == 401

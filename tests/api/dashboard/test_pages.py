"""The dashboard's pages over HTTP: sign-in, what each page shows, and who may see what."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from api.dashboard import formatting
from api.dashboard.security import CONTENT_SECURITY_POLICY
from api.dashboard.session import COOKIE_NAME
from tests.api.dashboard.conftest import form_token
from tests.api.dashboard.world import ADMIN_KEY, World
from tests.api.helpers import bearer

pytestmark = pytest.mark.dated  # the world is built at now: this month, the closed one, the last 7 days


class _Metrics(HTMLParser):
    """Collects ``data-metric``/``data-value`` pairs and the range caption's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, str] = {}
        self.caption: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "data-metric" in values:
            self.metrics[values["data-metric"]] = values["data-value"]
        if values.get("id") == "range-caption":
            self.caption = values


def page_metrics(html: str) -> _Metrics:
    parser = _Metrics()
    parser.feed(html)
    return parser


TOTALS = ("requests", "hit", "miss", "output", "cost")


def api_buckets(
    client: TestClient, secret: str, start: int, end: int, width: str
) -> list[dict[str, Decimal]]:
    """Each bucket of ``GET /v1/usage`` for the range (following next_page), summed over its results."""
    buckets = []
    page = None
    while True:
        params = {
            "start_time": start,
            "end_time": end,
            "bucket_width": width,
            "limit": 31 if width == "1d" else 168,
        }
        if page:
            params["page"] = page
        body = client.get("/v1/usage", params=params, headers=bearer(secret)).json()
        for bucket in body["data"]:
            totals = dict.fromkeys(TOTALS, Decimal(0))
            for result in bucket["results"]:
                totals["requests"] += result["num_model_requests"]
                totals["hit"] += result["cache_hit_input_tokens"]
                totals["miss"] += result["cache_miss_input_tokens"]
                totals["output"] += result["output_tokens"]
                totals["cost"] += Decimal(result["amount"]["value"])
            buckets.append(totals)
        page = body["next_page"]
        if not body["has_more"]:
            return buckets


def summed(buckets: list[dict[str, Decimal]]) -> dict[str, Decimal]:
    return {name: sum((bucket[name] for bucket in buckets), Decimal(0)) for name in TOTALS}


def api_totals(client: TestClient, secret: str, start: int, end: int, width: str) -> dict[str, Decimal]:
    """Sums over every bucket of ``GET /v1/usage`` for the range."""
    return summed(api_buckets(client, secret, start, end, width))


def token_bars(buckets: list[dict[str, Decimal]]) -> int:
    """The bars the tokens chart draws for these buckets: one per bucket and token class with tokens
    (how many days that spans depends on the day: in a month's first hour, one)."""
    return sum(1 for bucket in buckets for name in ("hit", "miss", "output") if bucket[name])


def test_pages_redirect_to_sign_in_and_back(browser_client: TestClient, world: World) -> None:
    response = browser_client.get("/dashboard/batches")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fbatches"
    login = browser_client.get(response.headers["location"])
    token = form_token(login.text)
    signed_in = browser_client.post(
        "/dashboard/login",
        data={"api_key": world.alice_secret, "csrf_token": token, "next": "/dashboard/batches"},
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/dashboard/batches"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
    assert browser_client.get("/dashboard/batches").status_code == 200


def test_sign_in_never_redirects_off_site(browser_client: TestClient, world: World) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/v1/files"):
        token = form_token(browser_client.get("/dashboard/login").text)
        response = browser_client.post(
            "/dashboard/login", data={"api_key": world.alice_secret, "csrf_token": token, "next": target}
        )
        assert response.headers["location"] == "/dashboard"


def test_a_wrong_key_is_refused_and_never_echoed(browser_client: TestClient, world: World) -> None:
    token = form_token(browser_client.get("/dashboard/login").text)
    wrong = world.alice_secret[:-4] + "zzzz"
    response = browser_client.post("/dashboard/login", data={"api_key": wrong, "csrf_token": token})
    assert response.status_code == 401
    assert "not valid" in response.text
    assert wrong not in response.text and world.alice_secret[12:] not in response.text
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")


def test_keys_never_reach_the_logs(browser_client: TestClient, world: World, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = world.alice_secret[:-4] + "zzzz"
    for secret in (wrong, world.alice_secret, ADMIN_KEY):
        token = form_token(browser_client.get("/dashboard/login").text)
        browser_client.post("/dashboard/login", data={"api_key": secret, "csrf_token": token})
        browser_client.get("/dashboard")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (wrong, world.alice_secret, ADMIN_KEY):
        assert secret not in logged


def test_batch_list_links_to_result_files(sign_in: Callable[[str], TestClient], world: World) -> None:
    page = sign_in(world.alice_secret).get("/dashboard/batches").text
    assert f'href="/dashboard/files/{world.alice_output_file_id}"' in page


def test_sign_in_needs_the_form_token(browser_client: TestClient, world: World) -> None:
    browser_client.get("/dashboard/login")
    response = browser_client.post(
        "/dashboard/login", data={"api_key": world.alice_secret, "csrf_token": "forged"}
    )
    assert response.status_code == 403
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")


def test_no_page_renders_the_key(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    secret_tail = world.alice_secret[12:]  # beyond the visible prefix
    for path in (
        "/dashboard",
        "/dashboard/batches",
        "/dashboard/invoices",
        f"/dashboard/batches/{world.alice_running_batch_id}",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert secret_tail not in response.text, path
    assert secret_tail not in client.cookies.get(COOKIE_NAME, "")


def test_security_headers(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    for path in ("/dashboard", "/dashboard/login", "/dashboard/static/dashboard.css"):
        headers = client.get(path).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    page = client.get("/dashboard").text
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/", "#", "?")), f"off-site asset or link: {url}"


def test_usage_numbers_equal_the_usage_api(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    for query in ("?range=7d", "?range=today", "?range=30d", f"?range=month&month={world.closed_period}"):
        page = page_metrics(client.get("/dashboard" + query).text)
        caption = page.caption
        api = api_totals(
            client,
            world.alice_secret,
            int(caption["data-start"]),
            int(caption["data-end"]),
            caption["data-bucket-width"],
        )
        assert int(page.metrics["requests"]) == api["requests"], query
        assert int(page.metrics["cache_hit_input_tokens"]) == api["hit"], query
        assert int(page.metrics["cache_miss_input_tokens"]) == api["miss"], query
        assert int(page.metrics["output_tokens"]) == api["output"], query
        assert Decimal(page.metrics["cost"]) == api["cost"], query
    assert (
        api_totals(client, world.alice_secret, int(caption["data-start"]), int(caption["data-end"]), "1d")[
            "requests"
        ]
        == 60
    )


def test_usage_page_draws_three_charts_and_breakdowns(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    page = client.get("/dashboard?range=7d").text
    for chart_id in ("chart-tokens", "chart-cost", "chart-hit-rate"):
        assert f'id="{chart_id}"' in page
    caption = page_metrics(page).caption
    buckets = api_buckets(
        client, world.alice_secret, int(caption["data-start"]), int(caption["data-end"]), "1d"
    )
    tokens_chart = re.search(r'<svg[^>]* id="chart-tokens".*?</svg>', page, re.S).group(0)
    bars = re.findall(r"<rect [^>]*><title>", tokens_chart)  # legend swatches have no tooltip
    assert len(bars) == token_bars(buckets) >= 3 and "<path" in page
    for table in ("by-api-key", "by-model", "by-batch"):
        assert f'id="{table}"' in page
    assert "mimo-v2.5-pro" in page and "tiny-test" in page


def test_empty_range_says_what_to_do(sign_in: Callable[[str], TestClient], world: World) -> None:
    page = sign_in(world.alice_secret).get("/dashboard?range=month&month=2025-06").text
    assert "No usage in this range" in page
    assert "client.batches.create" in page


def test_bad_range_is_a_clear_error_page(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    response = client.get("/dashboard?range=forever")
    assert response.status_code == 400
    assert "range must be one of" in response.text and response.headers["content-type"].startswith(
        "text/html"
    )
    assert client.get("/dashboard?range=month&month=2026-13").status_code == 400


def test_another_accounts_objects_are_not_found(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    for path in (
        f"/dashboard/batches/{world.bob_batch_id}",
        f"/dashboard/batches/{world.bob_batch_id}/cancel",
        f"/dashboard/files/{world.bob_output_file_id}",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Not found" in response.text
    progress = client.get(
        f"/dashboard/batches/progress.json?ids={world.bob_batch_id},{world.alice_running_batch_id}"
    ).json()
    assert [batch["id"] for batch in progress["batches"]] == [world.alice_running_batch_id]


def test_batch_progress_fields(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    [batch] = client.get(f"/dashboard/batches/progress.json?ids={world.alice_running_batch_id}").json()[
        "batches"
    ]
    assert batch["status"] == "in_progress" and batch["is_live"] and batch["can_cancel"]
    assert batch["percent"] == 25  # 10 of 40
    assert batch["text"]["progress"] == "10 / 40"
    assert batch["text"]["hit_rate"] == "80.0%"  # 4,000 of 5,000 input tokens
    assert batch["text"]["tokens"] == "5,800"
    # 10 done in 10 minutes, 30 to go: about 30 minutes left
    assert batch["text"]["eta"] in ("29 min", "30 min")


def test_cancel_needs_confirmation_and_a_token(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    path = f"/dashboard/batches/{world.alice_running_batch_id}/cancel"
    confirm = client.get(path)
    assert "Yes, cancel the batch" in confirm.text and "10 of 40" in confirm.text
    assert client.post(path, data={"csrf_token": "wrong"}).status_code == 403
    assert (
        client.post(
            path, data={"csrf_token": form_token(confirm.text)}, headers={"origin": "https://evil.example"}
        ).status_code
        == 403
    )
    batch = client.get(
        f"/v1/batches/{world.alice_running_batch_id}", headers=bearer(world.alice_secret)
    ).json()
    assert batch["status"] == "in_progress"
    done = client.post(path, data={"csrf_token": form_token(confirm.text)})
    assert (
        done.status_code == 303
        and done.headers["location"] == f"/dashboard/batches/{world.alice_running_batch_id}"
    )
    batch = client.get(
        f"/v1/batches/{world.alice_running_batch_id}", headers=bearer(world.alice_secret)
    ).json()
    assert batch["status"] == "cancelling"


def test_downloads_of_own_files_and_exports(sign_in: Callable[[str], TestClient], world: World) -> None:
    client = sign_in(world.alice_secret)
    output = client.get(f"/dashboard/files/{world.alice_output_file_id}")
    assert output.status_code == 200 and output.content == b'{"ok": 1}\n'
    assert output.headers["content-disposition"].startswith("attachment;")
    csv_export = client.get(f"/dashboard/exports/{world.closed_period}.csv")
    api_export = client.get(
        "/v1/billing/exports", params={"period": str(world.closed_period)}, headers=bearer(world.alice_secret)
    )
    assert csv_export.status_code == 200 and csv_export.text == api_export.text
    # Random ids may spell "bob": look at the account column, not the text.
    rows = list(csv.DictReader(io.StringIO(csv_export.text)))
    assert rows and {row["account"] for row in rows} == {"alice"}
    json_export = client.get(f"/dashboard/exports/{world.closed_period}.json")
    assert json_export.headers["content-type"] == "application/json"


def test_invoices_page_shows_past_upcoming_and_prices(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    page = client.get("/dashboard/invoices").text
    invoices = client.get("/v1/billing/invoices", headers=bearer(world.alice_secret)).json()["data"]
    assert len(invoices) == 1
    assert invoices[0]["id"] in page and f"/dashboard/exports/{world.closed_period}.csv" in page
    assert "Prices in force" in page and "default@2025-01" in page
    assert 'data-metric="upcoming_total"' in page
    detail = client.get(f"/dashboard/invoices/{invoices[0]['id']}").text
    total = page_metrics(detail).metrics["invoice_total"]
    assert int(total) == invoices[0]["total_minor"]


def test_sign_out_needs_the_token_and_ends_the_session(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    token = form_token(client.get("/dashboard").text)
    assert client.post("/dashboard/logout", data={"csrf_token": "nope"}).status_code == 403
    response = client.post("/dashboard/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert client.get("/dashboard").status_code == 303


def test_a_revoked_key_ends_its_session(sign_in: Callable[[str], TestClient], world: World, settings) -> None:
    from hybatch import accounts
    from hybatch.db import make_engine, make_session_factory, unit_of_work

    client = sign_in(world.alice_secret)
    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        accounts.revoke_api_key(session, world.alice_secret[:12])
    engine.dispose()
    assert client.get("/dashboard").status_code == 303


def test_a_forged_cookie_is_ignored(browser_client: TestClient, world: World) -> None:
    browser_client.cookies.set(COOKIE_NAME, "eyJhIjoiYWNjdCJ9.AAAA", path="/dashboard")
    assert browser_client.get("/dashboard").status_code == 303


def test_operator_sees_every_account_and_developers_do_not(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    assert client.get("/dashboard/admin").status_code == 404
    assert client.get(f"/dashboard/admin/exports/{world.closed_period}.csv").status_code == 404
    client.cookies.clear()
    operator = sign_in(ADMIN_KEY)
    page = operator.get("/dashboard/admin?range=7d")
    assert page.status_code == 200 and "alice" in page.text and "bob" in page.text
    assert ADMIN_KEY not in page.text
    assert operator.get("/dashboard").headers["location"] == "/dashboard/admin"
    alice_view = operator.get(f"/dashboard/admin/accounts/{world.alice_account_id}?range=7d").text
    assert "Operator view of account" in alice_view
    assert f"/dashboard/admin/exports/{world.closed_period}.csv" in page.text
    invoiced = sum(
        invoice["total_minor"]
        for secret in (world.alice_secret, world.bob_secret)
        for invoice in operator.get("/v1/billing/invoices", headers=bearer(secret)).json()["data"]
    )
    closed_row = re.search(r'<table class="data" id="closed-periods">.*?</table>', page.text, re.S).group(0)
    assert formatting.minor_money(invoiced, "usd") in closed_row and ">2<" in closed_row  # two invoices
    everyone = operator.get(f"/dashboard/admin/exports/{world.closed_period}.csv")
    assert everyone.status_code == 200 and "alice" in everyone.text and "bob" in everyone.text
    developer_view = page_metrics(
        operator.get(f"/dashboard/admin/accounts/{world.alice_account_id}?range=7d").text
    )
    assert int(developer_view.metrics["requests"]) == 120


def test_batch_page_shows_the_prefix_cache_counters(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    page = client.get(f"/dashboard/batches/{world.alice_finished_batch_id}").text
    table = re.search(r'<table class="data details" id="cache-metrics">.*?</table>', page, re.S).group(0)
    assert "<td>2,500 tokens</td>" in table and "<td>500 tokens</td>" in table
    assert "<td>9 / 1</td>" in table and "<td>2 (64 tokens)</td>" in table
    # Why hits were short, and where the hits came from (issue #13 item 7).
    assert '<td id="short-missing-window">2 (64 tokens)</td>' in table
    assert '<td id="short-eviction">3 (1,200 tokens)</td>' in table
    assert '<td id="short-tier">0 (0 tokens)</td>' in table
    assert '<td id="hits-shared">700 tokens</td>' in table  # the shared KV tier (issue #13 item 6)
    assert '<td id="hits-earlier">11,000 / 4,000</td>' in table
    assert "15,000 came from the cache (75.0%)" in page
    assert "<dt>Cost</dt>" in page  # finished: no "so far"
    running = client.get(f"/dashboard/batches/{world.alice_running_batch_id}").text
    assert 'id="cache-metrics"' not in running and "<dt>Cost so far</dt>" in running


def test_invoices_page_explains_usage_that_cannot_be_priced(
    sign_in: Callable[[str], TestClient], world: World, settings
) -> None:
    from datetime import UTC, datetime

    from hybatch.db import make_engine, make_session_factory, unit_of_work
    from hybatch.models import Batch, UsageRecord

    engine = make_engine(settings.database_url)
    with unit_of_work(make_session_factory(engine)) as session:
        batch = session.get(Batch, world.alice_running_batch_id)
        session.add(
            UsageRecord(
                account_id=batch.account_id,
                api_key_id=batch.api_key_id,
                batch_id=batch.id,
                custom_id="from-before-any-schedule",
                model="tiny-test",
                cache_hit_input_tokens=0,
                cache_miss_input_tokens=10,
                output_tokens=5,
                prompt_tokens=10,
                created_at=datetime(2024, 6, 1, tzinfo=UTC),  # the default schedule starts in 2025
            )
        )
    engine.dispose()
    page = sign_in(world.alice_secret).get("/dashboard/invoices")
    assert page.status_code == 200
    assert "cannot be priced yet" in page.text and "no version of price schedule" in page.text
    assert "Prices in force" in page.text


def test_usage_page_says_when_requests_have_no_price(
    sign_in: Callable[[str], TestClient], world: World, settings
) -> None:
    import sqlalchemy as sa

    from hybatch.db import make_engine
    from hybatch.models import BatchRequestResult, UsageRecord

    client = sign_in(world.alice_secret)
    assert 'id="unpriced-note"' not in client.get("/dashboard?range=7d").text
    engine = make_engine(settings.database_url)
    with engine.begin() as connection:  # three requests recorded without a price, as the worker does
        rows = connection.execute(
            sa.select(BatchRequestResult.id, BatchRequestResult.custom_id, BatchRequestResult.line).where(
                BatchRequestResult.batch_id == world.alice_finished_batch_id
            )
        ).all()
        for row_id, custom_id, line in rows[:3]:
            unpriced = {key: value for key, value in line.items() if key != "x_billing"}
            connection.execute(
                sa.update(BatchRequestResult).where(BatchRequestResult.id == row_id).values(line=unpriced)
            )
            connection.execute(
                sa.update(UsageRecord)
                .where(
                    UsageRecord.batch_id == world.alice_finished_batch_id, UsageRecord.custom_id == custom_id
                )
                .values(amount=None, currency=None, price_version=None)
            )
    engine.dispose()
    page = client.get("/dashboard?range=7d").text
    assert re.search(r'id="unpriced-note">3 of these requests', page)

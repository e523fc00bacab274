"""The invoices pages: a month that ended but was not closed is not late usage; invoice lines and the
price table name prompt lengths and monthly-token bands in the same words; the served model is marked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.invoices import close_period, list_invoices
from billing.invoicing.upcoming import upcoming_invoices
from billing.periods import Period
from billing.sample_ledger import write_sample_ledger
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.models import Batch, UsageRecord, utc_now
from hybatch.settings import Settings
from tests.api.dashboard.world import World

pytestmark = pytest.mark.dated  # builds its data relative to now


@dataclass(frozen=True)
class Carol:
    """An account with usage in the month before this one (never closed) and in this one."""

    secret: str
    account_id: str
    now: datetime
    previous: Period
    current: Period


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _usage_of(
    session: Session, name: str, start: datetime, end: datetime, num_requests: int, seed: int
) -> list[str]:
    ledger = write_sample_ledger(
        session,
        account_name=name,
        num_requests=num_requests,
        start=start,
        end=end,
        models=("tiny-test",),
        num_keys=1,
        requests_per_batch=20,
        seed=seed,
    )
    return [ledger.account_id, *ledger.api_key_secrets]


@pytest.fixture
def carol(session_factory: sessionmaker[Session]) -> Carol:
    now = utc_now()
    current = Period.containing(now)
    previous = current.previous()
    recent = min(timedelta(hours=1), now - current.start)  # stays in this month on its first minutes
    with unit_of_work(session_factory) as session:
        account_id, secret = _usage_of(
            session, "carol", previous.start + timedelta(days=3), previous.start + timedelta(days=5), 40, 1
        )
        _usage_of(session, "carol", now - recent, now - recent / 10, 10, 2)
    return Carol(secret, account_id, now, previous, current)


def _metric(page: str, name: str) -> int:
    return int(re.search(rf'data-metric="{name}" data-value="(-?\d+)"', page).group(1))


def test_an_ended_month_not_yet_closed_is_not_late_usage(
    sign_in: Callable[[str], TestClient], carol: Carol, session_factory: sessionmaker[Session]
) -> None:
    client = sign_in(carol.secret)
    page = client.get("/dashboard/invoices").text
    assert "late usage" not in page
    assert f'id="ended-{carol.previous}"' in page and f"{carol.previous}: ended, not closed yet" in page
    assert f"it goes on {carol.previous}'s own invoice when the operator closes the month" in page
    ended_total, upcoming_total = _metric(page, "ended_total"), _metric(page, "upcoming_total")
    # What the page said the close would invoice is what the close invoices; this month is unchanged.
    with unit_of_work(session_factory) as session:
        close_period(session, carol.previous, now=carol.now)
    with session_factory() as session:
        [invoice] = list_invoices(session, carol.account_id)
    assert (invoice.period, invoice.total_minor) == (str(carol.previous), ended_total)
    closed = client.get("/dashboard/invoices").text
    assert 'id="ended-' not in closed and _metric(closed, "upcoming_total") == upcoming_total


def test_usage_of_a_closed_month_is_late_usage(
    sign_in: Callable[[str], TestClient], carol: Carol, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        close_period(session, carol.previous, now=carol.now)
        batch = session.scalars(sa.select(Batch).where(Batch.account_id == carol.account_id)).first()
        session.add(
            UsageRecord(
                account_id=carol.account_id,
                api_key_id=batch.api_key_id,
                batch_id=batch.id,
                custom_id="finished-at-the-end-of-last-month",
                model="tiny-test",
                cache_hit_input_tokens=0,
                cache_miss_input_tokens=100,
                output_tokens=50,
                prompt_tokens=100,
                created_at=carol.previous.end - timedelta(seconds=1),  # committed after the close
            )
        )
    page = sign_in(carol.secret).get("/dashboard/invoices").text
    lines = re.search(r'id="upcoming-lines".*?</table>', page, re.S).group(0)
    assert f"late usage from {carol.previous}" in lines and "not closed" not in lines


def test_every_month_not_closed_gets_its_own_upcoming_invoice(session_factory: sessionmaker[Session]) -> None:
    now = utc_now()
    current = Period.containing(now)
    two_ago, last = current.previous().previous(), current.previous()
    with unit_of_work(session_factory) as session:
        account_id, _ = _usage_of(session, "dave", two_ago.start, two_ago.start + timedelta(days=2), 30, 3)
        _usage_of(session, "dave", last.start, last.start + timedelta(days=2), 30, 4)
    with session_factory() as session:
        previews = upcoming_invoices(session, account_id, now)
    assert [(p.period, p.has_ended, p.num_usage_records) for p in previews] == [
        (two_ago, True, 30),
        (last, True, 30),
        (current, False, 0),
    ]
    assert not any(line.is_adjustment for preview in previews for line in preview.lines)
    with unit_of_work(session_factory) as session:
        close_period(session, two_ago, now=now)
    with session_factory() as session:
        later = upcoming_invoices(session, account_id, now)
        [invoice] = list_invoices(session, account_id)
    assert [p.period for p in later] == [last, current]
    assert invoice.total_minor == previews[0].total_minor  # the preview was the close


def test_invoice_lines_and_price_table_use_the_same_words(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    page = client.get("/dashboard/invoices").text
    lines = re.search(r'id="upcoming-lines".*?</table>', page, re.S).group(0)
    prices = re.search(r'id="price-sheet".*?</table>', page, re.S).group(0)
    assert ">upto_256k<" not in page and "Price tier" not in page
    assert '<td data-label="Prompt length" data-context-tier="upto_256k">up to 262,144 tokens</td>' in lines
    assert '<td data-label="Monthly tokens" data-price-tier="1">first 1B</td>' in lines
    assert '<td data-label="Prompt length">up to 262,144 tokens</td>' in prices
    assert "first 1B" in prices and "over 262,144 tokens" in prices
    invoice_id = re.search(r'href="/dashboard/invoices/(inv_\w+)"', page).group(1)
    stored = client.get(f"/dashboard/invoices/{invoice_id}").text
    assert "up to 262,144 tokens" in stored and "first 1B" in stored and ">upto_256k<" not in stored


def test_the_price_table_marks_the_served_model(sign_in: Callable[[str], TestClient], world: World) -> None:
    page = sign_in(world.alice_secret).get("/dashboard/invoices").text
    prices = re.search(r'id="price-sheet".*?</table>', page, re.S).group(0)
    rows = re.findall(r'<tr>\s*<th scope="row"( data-served)?>(.*?)</th>', prices, re.S)
    served = {" ".join(re.sub(r"<[^>]+>", " ", name).split()) for flag, name in rows if flag}
    others = {" ".join(re.sub(r"<[^>]+>", " ", name).split()) for flag, name in rows if not flag}
    assert served == {"Any other model served here: tiny-test"}  # the default schedule's "*" entry
    assert others == {"mimo-v2.5-pro not served here"}
    assert "This service runs one model, <strong>tiny-test</strong>" in page

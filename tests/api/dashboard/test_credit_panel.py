"""The invoices page's prepaid credit panel: balance, grants in draw order, billing alerts."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pypdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from billing.alerts import check_credit_alerts
from billing.credits.balance import credit_balance
from billing.credits.drawdown import draw_credits
from billing.credits.grants import grant_credits
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.models import Batch, utc_now
from hybatch.settings import Settings


@pytest.fixture
def session_factory(settings: Settings) -> sessionmaker[Session]:
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _panel(page: str) -> str:
    return re.search(r'<section aria-labelledby="credits-heading".*?</section>', page, re.S).group(0)


def test_a_postpaid_account_is_told_so(sign_in: Callable[[str], TestClient], session_factory) -> None:
    with unit_of_work(session_factory) as session:
        account = accounts.create_account(session, "dave")
        secret = accounts.create_api_key(session, account.id).secret
    panel = _panel(sign_in(secret).get("/dashboard/invoices").text)
    assert "billed after use" in panel and "credit-grants" not in panel


def test_the_balance_grants_and_alerts(sign_in: Callable[[str], TestClient], session_factory) -> None:
    now = utc_now()
    with unit_of_work(session_factory) as session:
        account = accounts.create_account(session, "erin")
        secret = accounts.create_api_key(session, account.id).secret
        late = grant_credits(session, account.id, amount=Decimal("10.00"), currency="usd", now=now)
        first = grant_credits(
            session,
            account.id,
            amount=Decimal("2.00"),
            currency="usd",
            expires_at=now + timedelta(days=9),
            now=now,
        )
        # 1.50 drawn from the expiring grant (drawn first), as the worker draws a recorded request
        draw_credits(
            session,
            account_id=account.id,
            batch_id=_a_batch(session, account.id),
            custom_id="r1",
            amount=Decimal("1.50"),
            currency="usd",
        )
        check_credit_alerts(session, credit_balance(session, account.id), Decimal("11.00"))
    panel = _panel(sign_in(secret).get("/dashboard/invoices").text)
    assert 'data-metric="credit_balance" data-value="10.50"' in panel and "$10.50" in panel
    grants = re.findall(r"<code>(cg_\w+)</code>", panel)
    assert grants == [first.id, late.id]  # draw order: the expiring one first
    assert "$0.50" in panel and "credits.low_balance" in panel


def _a_batch(session: Session, account_id: str) -> str:
    from hybatch.models import File, FilePurpose
    from tests.billing.ledger import add_batch

    key_id = accounts.create_api_key(session, account_id).key.id
    upload = File(account_id=account_id, filename="in.jsonl", purpose=FilePurpose.BATCH, size_bytes=1)
    session.add(upload)
    session.flush()
    return add_batch(session, account_id, key_id, upload.id, model="tiny-test").id


def test_an_invoice_page_lists_its_credit_notes(
    sign_in: Callable[[str], TestClient], session_factory
) -> None:
    from billing.invoicing.credit_notes import CreditRequest, issue_credit_note
    from billing.invoicing.invoices import close_period, list_invoices
    from billing.periods import Period
    from tests.billing.ledger import Customer, add_usage, at

    with unit_of_work(session_factory) as session:
        account = accounts.create_account(session, "fay")
        secret = accounts.create_api_key(session, account.id).secret
        batch_id = _a_batch(session, account.id)
        key_id = session.get(Batch, batch_id).api_key_id
        add_usage(
            session, Customer(account.id, key_id, batch_id, "fay"), at("2026-03-05 10:00"), miss=200_000
        )
        close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
        (invoice,) = list_invoices(session, account.id)
        note = issue_credit_note(
            session, None, invoice.id, reason="Outage on 3 March", credits=[CreditRequest(1, 5)]
        )
        invoice_id, note_id = invoice.id, note.id
    client = sign_in(secret)
    page = client.get(f"/dashboard/invoices/{invoice_id}").text
    section = re.search(r'<section aria-labelledby="credit-notes-heading".*?</section>', page, re.S).group(0)
    assert note_id in section and "Outage on 3 March" in section and "line 1: $0.05" in section
    assert 'data-metric="credit_note_total" data-value="5"' in section
    # 200,000 cache-miss tokens at the default $0.70 / 1M: $0.14, less the note's $0.05
    assert 'data-metric="invoice_total" data-value="14"' in page
    assert 'data-metric="total_after_credit_notes" data-value="9">$0.09<' in section
    # The invoice PDF lists the same note and total, as the page does.
    pdf = client.get(f"/dashboard/invoices/{invoice_id}/pdf").content
    text = "\n".join(sheet.extract_text() for sheet in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    assert f"no. 1\n{note_id}\n" in text and "line 1: $0.05 $0.05" in text
    assert "Total less credit notes $0.09" in text


def test_the_panel_shows_the_spend_limits(sign_in: Callable[[str], TestClient], session_factory) -> None:
    from billing.limits.spend_limits import set_limit

    with unit_of_work(session_factory) as session:
        account = accounts.create_account(session, "gus")
        secret = accounts.create_api_key(session, account.id).secret
        set_limit(
            session, account.id, api_key_id=None, soft=Decimal("50"), hard=Decimal("80"), currency="usd"
        )
    panel = _panel(sign_in(secret).get("/dashboard/invoices").text)
    limits = re.search(r'<ul id="spend-limits">.*?</ul>', panel, re.S).group(0)
    assert "The account: $0.00 spent in" in limits
    assert "soft limit $50.00 (an alert)" in limits and "hard limit $80.00" in limits


def test_a_keys_limit_is_named_by_the_keys_prefix(
    sign_in: Callable[[str], TestClient], session_factory
) -> None:
    from billing.limits.spend_limits import set_limit

    with unit_of_work(session_factory) as session:
        account = accounts.create_account(session, "hal")
        made = accounts.create_api_key(session, account.id)
        set_limit(session, account.id, api_key_id=made.key.id, soft=None, hard=Decimal("5"), currency="usd")
        secret, prefix, key_id = made.secret, made.key.prefix, made.key.id
    panel = _panel(sign_in(secret).get("/dashboard/invoices").text)
    limits = re.search(r'<ul id="spend-limits">.*?</ul>', panel, re.S).group(0)
    assert f"API key {prefix}…: $0.00 spent in" in limits and key_id not in limits

"""Prepaid credit by hand-computed tables: draw order (priority, expiry), a draw spanning two grants,
expiry forfeits, holds admit what fits, the invoice deducts what the grants paid, alerts once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.alerts import CREDITS_DEPLETED, CREDITS_LOW, check_credit_alerts, recent_alerts
from billing.credits.balance import credit_balance
from billing.credits.drawdown import draw_credits
from billing.credits.grants import grant_credits
from billing.credits.holds import hold_credit, release_hold
from billing.invoicing.exports import export_rows
from billing.invoicing.invoices import close_period, invoice_credit, list_invoices
from billing.periods import Period
from billing.pricing.schedule_parser import parse_schedule
from billing.pricing.schedule_store import assign_schedule, load_schedule
from hybatch.errors import InvalidRequestError
from hybatch.models import Batch, BatchStatus, CreditDraw, WebhookDelivery, WebhookEndpoint
from tests.billing.ledger import Customer, add_customer, add_usage, at
from tests.billing.schedule_docs import flat, model_entry, schedule, version

D = Decimal
M = 1_000_000


def _grants(session: Session, customer: Customer) -> dict[str, str]:
    """a: 10.00 priority 0 forever; b: 5.00 priority 0 until 20 March; c: 3.00 priority 1 forever."""
    made = {
        "a": grant_credits(
            session, customer.account_id, amount=D("10.00"), currency="usd", now=at("2026-03-01 00:00")
        ),
        "b": grant_credits(
            session,
            customer.account_id,
            amount=D("5.00"),
            currency="usd",
            expires_at=at("2026-03-20 00:00"),
            now=at("2026-03-01 00:01"),
        ),
        "c": grant_credits(
            session,
            customer.account_id,
            amount=D("3.00"),
            currency="usd",
            priority=1,
            now=at("2026-03-01 00:02"),
        ),
    }
    return {name: grant.id for name, grant in made.items()}


def _draw(session: Session, customer: Customer, custom_id: str, amount: str, when: str):
    return draw_credits(
        session,
        account_id=customer.account_id,
        batch_id=customer.batch_id,
        custom_id=custom_id,
        amount=D(amount),
        currency="usd",
        at=at(when),
    )


def _drawn(session: Session, custom_id: str) -> dict[str, Decimal]:
    rows = session.execute(
        sa.select(CreditDraw.grant_id, CreditDraw.amount).where(CreditDraw.custom_id == custom_id)
    )
    return dict(rows.all())


def test_draws_follow_priority_then_expiry_and_span_grants(session: Session) -> None:
    customer = add_customer(session)
    g = _grants(session, customer)
    # By hand: b (priority 0, expires first) pays first, then a (priority 0, no expiry), then c.
    #   r1 03-05  4.000125 -> b 4.000125                 b left 0.999875
    #   r2 03-06  0.5      -> b 0.5                      b left 0.499875
    #   r3 03-21  9        -> a 9 (b expired: 0.499875 forfeited)      a left 1
    #   r4 03-22  2.25     -> a 1, c 1.25 (spans two grants)           c left 1.75
    #   r5 03-23  2        -> c 1.75, 0.25 uncovered
    assert _draw(session, customer, "r1", "4.000125", "2026-03-05 10:00").draws == ((g["b"], D("4.000125")),)
    assert _draw(session, customer, "r2", "0.5", "2026-03-06 10:00").draws == ((g["b"], D("0.5")),)
    r3 = _draw(session, customer, "r3", "9", "2026-03-21 10:00")
    assert r3.draws == ((g["a"], D("9")),)
    assert r3.before.forfeited == D("0.499875") and r3.before.balance == D("13")
    r4 = _draw(session, customer, "r4", "2.25", "2026-03-22 10:00")
    assert r4.draws == ((g["a"], D("1")), (g["c"], D("1.25"))) and r4.uncovered == 0
    assert _drawn(session, "r4") == {g["a"]: D("1"), g["c"]: D("1.25")}
    assert r4.after.balance == D("1.75")
    r5 = _draw(session, customer, "r5", "2", "2026-03-23 10:00")
    assert r5.draws == ((g["c"], D("1.75")),) and r5.uncovered == D("0.25")

    state = credit_balance(session, customer.account_id, at("2026-03-24 00:00"))
    assert state.granted == D("18.00")
    assert state.drawn == D("17.500125")  # 4.000125 + 0.5 + 9 + 2.25 + 1.75
    assert state.forfeited == D("0.499875") and state.balance == D("0")
    assert state.granted - state.drawn - state.forfeited == state.balance


def test_before_expiry_the_expiring_grant_still_counts(session: Session) -> None:
    customer = add_customer(session)
    _grants(session, customer)
    assert credit_balance(session, customer.account_id, at("2026-03-19 23:59")).balance == D("18.00")
    assert credit_balance(session, customer.account_id, at("2026-03-20 00:00")).balance == D("13.00")


def test_a_recorded_request_never_draws_again(session: Session) -> None:
    customer = add_customer(session)
    _grants(session, customer)
    assert _draw(session, customer, "once", "1", "2026-03-05 10:00") is not None
    add_usage(session, customer, at("2026-03-05 10:00"), miss=10, custom_id="once")
    assert _draw(session, customer, "once", "1", "2026-03-05 10:01") is None
    assert sum(_drawn(session, "once").values()) == D("1")


def test_an_account_without_grants_draws_nothing(session: Session) -> None:
    customer = add_customer(session)
    assert credit_balance(session, customer.account_id) is None
    assert _draw(session, customer, "x", "1", "2026-03-05 10:00") is None


def test_grants_report_every_problem_at_once(session: Session) -> None:
    customer = add_customer(session)
    with pytest.raises(InvalidRequestError) as raised:
        grant_credits(
            session,
            customer.account_id,
            amount=D("-1.005"),
            currency="usd",
            expires_at=at("2026-01-01 00:00"),
            now=at("2026-03-01 00:00"),
        )
    message = raised.value.message
    assert "minor unit" in message and "positive" in message and "not in the future" in message
    grant_credits(session, customer.account_id, amount=D("1"), currency="usd")
    with pytest.raises(InvalidRequestError, match="in usd, not eur"):
        grant_credits(session, customer.account_id, amount=D("1"), currency="eur")


def test_holds_admit_every_request_that_still_fits_in_order(session: Session) -> None:
    customer = add_customer(session)
    grant_credits(session, customer.account_id, amount=D("1.75"), currency="usd")
    batch = session.get(Batch, customer.batch_id)
    batch.status = BatchStatus.IN_PROGRESS
    candidates = [
        ("x1", D("1.00")),
        ("x2", D("1.00")),
        ("x3", D("0.50")),
        ("x4", D("0.25")),
        ("x5", D("0.01")),
    ]
    # 1.75: x1 (0.75 left), x2 does not fit, x3 (0.25 left), x4 (0 left), x5 does not fit.
    result = hold_credit(
        session,
        account_id=customer.account_id,
        batch_id=customer.batch_id,
        api_key_id=customer.api_key_id,
        candidates=candidates,
    )
    assert result.held == {"x1", "x3", "x4"}
    assert result.refused == {"x2": "insufficient_credits", "x5": "insufficient_credits"}
    assert credit_balance(session, customer.account_id).spendable == D("0")
    # Offered again (a shard taken over), a request replaces its own hold instead of adding one.
    result = hold_credit(
        session,
        account_id=customer.account_id,
        batch_id=customer.batch_id,
        api_key_id=customer.api_key_id,
        candidates=[("x1", D("1"))],
    )
    assert result.held == {"x1"} and credit_balance(session, customer.account_id).held == D("1.75")
    release_hold(session, customer.batch_id, "x4")
    assert credit_balance(session, customer.account_id).spendable == D("0.25")
    batch.status = BatchStatus.CANCELLED  # holds of an ended batch stop counting
    session.flush()
    assert credit_balance(session, customer.account_id).spendable == D("1.75")


def test_alerts_fire_once_per_grant_at_low_balance_and_at_zero(session: Session) -> None:
    customer = add_customer(session)
    endpoint = WebhookEndpoint(
        id="we_test",
        account_id=customer.account_id,
        name="ops",
        url="https://example.com/hook",
        event_types=[CREDITS_LOW, CREDITS_DEPLETED],
        secret="whsec_x",
    )
    session.add(endpoint)
    grant_credits(session, customer.account_id, amount=D("2.00"), currency="usd", now=at("2026-03-01 00:00"))
    low = D("1.00")
    assert (
        check_credit_alerts(session, _draw(session, customer, "r1", "0.5", "2026-03-02 00:00").after, low)
        == []
    )
    assert check_credit_alerts(
        session, _draw(session, customer, "r2", "0.5", "2026-03-02 00:01").after, low
    ) == [CREDITS_LOW]
    assert (
        check_credit_alerts(session, _draw(session, customer, "r3", "0.4", "2026-03-02 00:02").after, low)
        == []
    )
    assert check_credit_alerts(
        session, _draw(session, customer, "r4", "0.6", "2026-03-02 00:03").after, low
    ) == [CREDITS_DEPLETED]
    # A new grant re-arms both.
    grant_credits(session, customer.account_id, amount=D("0.50"), currency="usd", now=at("2026-03-03 00:00"))
    after = credit_balance(session, customer.account_id, at("2026-03-03 00:01"))
    assert check_credit_alerts(session, after, low) == [CREDITS_LOW]
    assert [alert.kind for alert in recent_alerts(session, customer.account_id)].count(CREDITS_LOW) == 2
    events = session.scalars(
        sa.select(WebhookDelivery.event_type).where(WebhookDelivery.endpoint_id == "we_test")
    )
    assert sorted(events) == [CREDITS_DEPLETED, CREDITS_LOW, CREDITS_LOW]


def test_a_balance_left_with_a_fraction_of_a_cent_is_used_up(session: Session) -> None:
    """Requests draw their exact cost and admission never runs one past the balance, so a prepaid
    balance ends a little above zero (seen running a batch on a 0.01 grant: 72 requests drew
    0.0099617, the other 48 ended insufficient_credits): the zero alert fires below one cent."""
    customer = add_customer(session)
    grant_credits(session, customer.account_id, amount=D("0.01"), currency="usd", now=at("2026-03-01 00:00"))
    after = _draw(session, customer, "r1", "0.0099617", "2026-03-02 00:00").after
    assert after.balance == D("0.0000383")
    assert check_credit_alerts(session, after, D("1.00")) == [CREDITS_LOW, CREDITS_DEPLETED]
    messages = sorted(alert.message for alert in recent_alerts(session, customer.account_id))
    assert messages == [
        "Credit balance 0.0000383 usd is at or below 1.00 usd.",
        "Credits used up: 0.0000383 usd left, less than 0.01 usd.",
    ]


def test_a_request_the_whole_balance_cannot_cover_raises_the_zero_alert(session: Session) -> None:
    customer = add_customer(session)
    grant_credits(session, customer.account_id, amount=D("0.05"), currency="usd", now=at("2026-03-01 00:00"))
    session.get(Batch, customer.batch_id).status = BatchStatus.IN_PROGRESS

    def hold(*candidates: tuple[str, Decimal]):
        return hold_credit(
            session,
            account_id=customer.account_id,
            batch_id=customer.batch_id,
            api_key_id=customer.api_key_id,
            candidates=list(candidates),
        )

    # 0.04 is held; 0.03 does not fit beside it but would once it settles: passed over, no alert.
    assert hold(("a", D("0.04")), ("b", D("0.03"))).refused == {"b": "insufficient_credits"}
    assert recent_alerts(session, customer.account_id) == []
    # 0.06 is more than the whole 0.05: it can never run on this credit.
    assert hold(("c", D("0.06"))).refused == {"c": "insufficient_credits"}
    [alert] = recent_alerts(session, customer.account_id)
    assert alert.kind == CREDITS_DEPLETED and alert.message == (
        "Credits used up: the balance of 0.05 usd does not cover a request's worst case of 0.06 usd; "
        "such requests end as insufficient_credits until credit is granted."
    )
    hold(("d", D("0.07")))
    assert len(recent_alerts(session, customer.account_id)) == 1  # once per grant
    # A batch of requests none of which fits writes the alert once, not once per request.
    statements: list[str] = []
    engine = session.get_bind()

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        hold(*((f"e{i}", D("0.08")) for i in range(200)))
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert sum("billing_alerts" in statement for statement in statements) == 1


def _flat_schedule(session: Session, customer: Customer) -> None:
    prices = {"cache_hit_input": flat("0.2"), "cache_miss_input": flat("2"), "output": flat("8")}
    load_schedule(
        session, parse_schedule(schedule("flat", version("v1", "2026-01-01", [model_entry("*", prices)])))
    )
    assign_schedule(session, customer.account_id, "flat", at("2026-01-01 00:00"))


def test_the_invoice_deducts_what_the_grants_paid_for_its_usage(session: Session) -> None:
    customer = add_customer(session)
    _flat_schedule(session, customer)
    grant_credits(session, customer.account_id, amount=D("4.50"), currency="usd", now=at("2026-03-01 00:00"))
    # By hand, "long" context (>= 1000 prompt tokens), usd per 1M: miss 2, output 8.
    #   r1: 1,000,000 miss + 250,000 out = 2.00 + 2.00 = 4.00 -> credit pays 4.00
    #   r2:   500,000 miss               = 1.00        -> credit pays the 0.50 left
    # Lines: miss 1,500,000 = 3.00 (300), output 250,000 = 2.00 (200); subtotal 500.
    # Credit 4.50 (450); due 50 = 0.50 exactly.
    for custom_id, miss, out, amount, when in (
        ("r1", M, 250_000, "4.00", "2026-03-05 10:00"),
        ("r2", 500_000, 0, "1.00", "2026-03-06 10:00"),
    ):
        _draw(session, customer, custom_id, amount, when)
        add_usage(session, customer, at(when), miss=miss, out=out, custom_id=custom_id)
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    (invoice,) = list_invoices(session, customer.account_id)
    credit = invoice_credit(session, invoice.id)
    assert (credit.amount, credit.amount_minor) == (D("4.50"), 450)
    assert (invoice.total_minor, invoice.total_amount) == (50, D("0.50"))
    summary, _detail = export_rows(session, Period(2026, 3))
    assert [(row["row_type"], row["amount_minor"]) for row in summary] == [
        ("line", 300),
        ("line", 200),
        ("credit", -450),
    ]
    with pytest.raises(Exception, match="immutable"):
        session.execute(sa.text("UPDATE invoice_credits SET amount_minor = 1"))
    session.rollback()


def test_the_credit_never_makes_an_invoice_negative(session: Session) -> None:
    customer = add_customer(session)
    _flat_schedule(session, customer)
    grant_credits(session, customer.account_id, amount=D("9.00"), currency="usd", now=at("2026-03-01 00:00"))
    # The request drew 5.00 at record time (a dearer marginal price), but the month rates it 1.00.
    _draw(session, customer, "r1", "5.00", "2026-03-05 10:00")
    add_usage(session, customer, at("2026-03-05 10:00"), miss=500_000, custom_id="r1")
    close_period(session, Period(2026, 3), now=at("2026-04-01 02:00"))
    (invoice,) = list_invoices(session, customer.account_id)
    assert invoice_credit(session, invoice.id).amount == D("1.00")
    assert (invoice.total_minor, invoice.total_amount) == (0, D("0.00"))


def test_usage_after_the_invoice_period_is_not_deducted_early(session: Session) -> None:
    customer = add_customer(session)
    _flat_schedule(session, customer)
    grant_credits(session, customer.account_id, amount=D("9.00"), currency="usd", now=at("2026-03-01 00:00"))
    _draw(session, customer, "april", "1.00", "2026-04-02 10:00")
    add_usage(session, customer, at("2026-04-02 10:00"), miss=500_000, custom_id="april")
    _draw(session, customer, "march", "1.00", "2026-03-02 10:00")
    add_usage(session, customer, at("2026-03-02 10:00"), miss=500_000, custom_id="march")
    close_period(session, Period(2026, 3), now=at("2026-04-03 00:00") + timedelta(hours=1))
    (invoice,) = list_invoices(session, customer.account_id)
    assert invoice_credit(session, invoice.id).amount == D("1.00") and invoice.total_minor == 0

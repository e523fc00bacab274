"""The ``hybatch billing ...`` commands as plain functions (the CLI imports them from this module;
``hybatch credits`` and ``hybatch limits`` from ``billing.credits.commands`` and
``billing.limits.commands``).

Each opens its own unit of work from the settings, does one thing and returns what to print;
failures are ``HybatchError``s carrying a message for the operator.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing import exports
from billing.invoicing.close_schedule import close_previous_month
from billing.invoicing.credit_notes import CreditRequest, issue_credit_note
from billing.invoicing.invoices import close_period, invoice_credit, list_invoices
from billing.money import MINOR_UNIT_EXPONENTS, minor_to_decimal, places
from billing.periods import Period
from billing.pricing import schedule_store
from billing.pricing.schedule_parser import read_schedule_file
from billing.sample_ledger import write_sample_ledger
from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.errors import InvalidRequestError, NotFoundError
from hybatch.models import Account, Invoice
from hybatch.settings import Settings


def _session_factory(settings: Settings):
    return make_session_factory(make_engine(settings.database_url))


def close(settings: Settings, period_text: str | None) -> list[str]:
    """Close ``period_text`` (YYYY-MM), or every due period when None; lines to print."""
    session_factory = _session_factory(settings)
    if period_text is None:
        results = close_previous_month(session_factory)
        if not results:
            return ["no period is due for closing"]
    else:
        period = Period.parse(period_text)
        with unit_of_work(session_factory) as session:
            results = [close_period(session, period)]
    out = []
    with session_factory() as session:
        names = dict(session.execute(sa.select(Account.id, Account.name)).all())
        for result in results:
            if result.already_closed:
                out.append(f"{result.period} was already closed; nothing changed")
                continue
            out.append(f"closed {result.period}: {len(result.invoice_ids)} invoices")
            for invoice in list_invoices(session, period=Period.parse(result.period)):
                if invoice.id in result.invoice_ids:
                    out.append(_closed_invoice_line(session, invoice, names))
    return out


def _closed_invoice_line(session: Session, invoice: Invoice, names: dict[str, str]) -> str:
    """``  inv_...  acme (acct_...)  4.77 usd``; with prepaid credit, what is due and how it came."""
    currency = invoice.currency
    total = minor_to_decimal(invoice.total_minor, currency)
    line = f"  {invoice.id}  {names.get(invoice.account_id, invoice.account_id)} ({invoice.account_id})"
    credit = invoice_credit(session, invoice.id)
    if credit is None:
        return f"{line}  {total} {currency}"
    credit_amount = minor_to_decimal(credit.amount_minor, currency)
    usage = minor_to_decimal(invoice.total_minor + credit.amount_minor, currency)
    return f"{line}  {total} {currency} due ({usage} of usage less {credit_amount} of prepaid credit)"


def export(settings: Settings, period_text: str, account_name: str | None, fmt: str) -> Iterator[str]:
    """The export of a closed period (of one account when named) as text chunks."""
    if fmt not in exports.FORMATS:
        raise InvalidRequestError(f"format must be one of {', '.join(exports.FORMATS)}", param="format")
    period = Period.parse(period_text)
    with _session_factory(settings)() as session:
        account_id = accounts.get_account(session, account_name).id if account_name else None
        summary, detail = exports.export_rows(session, period, account_id)
    return exports.render(period, summary, detail, fmt)


def invoice_pdf(
    settings: Settings, period_text: str, account_name: str | None, out: Path | None
) -> list[str]:
    """Write invoices of a closed period as PDFs; the lines to print. With ``account_name``, that
    account's invoice to ``out`` (default: the invoice's own file name in the current directory);
    without, every invoice of the period into the folder ``out`` (default: the current one)."""
    # Imported here: the PDF library loads only for this command.
    from billing.invoicing.invoice_document import find_invoice, invoice_document
    from billing.invoicing.pdf import render_invoice_pdf
    from billing.settings import get_billing_settings

    period = Period.parse(period_text)
    issuer = get_billing_settings().invoice_issuer
    with _session_factory(settings)() as session:
        if account_name is not None:
            invoice = find_invoice(session, account_name, period)
            documents = [invoice_document(session, invoice.account_id, invoice.id)]
        else:
            documents = [
                invoice_document(session, invoice.account_id, invoice.id)
                for invoice in list_invoices(session, period=period)
            ]
            if not documents:
                raise NotFoundError(
                    f"{period} has no invoices (is it closed? hybatch billing close --period {period})",
                    code="invoice_not_found",
                )
    folder = (out or Path()) if account_name is None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for document in documents:
        target = folder / document.filename if folder is not None else out or Path(document.filename)
        target.write_bytes(render_invoice_pdf(document, issuer=issuer))
        lines.append(
            f"wrote {target}: {document.account_name} {document.period}, "
            f"{len(document.lines)} lines, {document.total}"
        )
    return lines


def serving_cost(
    settings: Settings,
    inputs_path: Path | None,
    given: dict[str, str],
    account_name: str | None,
    model: str | None,
) -> list[str]:
    """What each token class costs to serve per 1M tokens, from the measured figures in
    ``inputs_path`` (default: the shipped ``measured_serving.yaml``) with the ``given`` figures on
    top (the options' text by input name; per-tier ones as ``device=N,host=N``),
    and the margin of the schedule in force (the account's, else the default) for ``model``
    (default: the served model); the lines to print."""
    from billing.pricing.serving_cost_report import (
        TIERED_INPUTS,
        parse_tier_figures,
        report_lines,
        serving_cost_report,
    )
    from billing.pricing.serving_inputs import MEASURED_SERVING_FILE, read_serving_document

    overrides = {
        key: parse_tier_figures(text, key) if key in TIERED_INPUTS else text for key, text in given.items()
    }
    document = read_serving_document(inputs_path or MEASURED_SERVING_FILE)
    # A unit of work: the default schedule is loaded on first use.
    with unit_of_work(_session_factory(settings)) as session:
        account_id = accounts.get_account(session, account_name).id if account_name else None
        report = serving_cost_report(
            session,
            document,
            overrides,
            account_id=account_id,
            model=model or settings.model_name,
            at=datetime.now(UTC),
        )
    return report_lines(report)


def load_schedules(settings: Settings, path: Path) -> list[str]:
    schedule_file = read_schedule_file(path)
    with unit_of_work(_session_factory(settings)) as session:
        result = schedule_store.load_schedule(session, schedule_file)
    return [f"loaded {version}" for version in result.added] + [
        f"unchanged {version}" for version in result.unchanged
    ]


def assign(settings: Settings, account_name: str, schedule: str, effective_from: str | None) -> str:
    moment = _moment(effective_from) if effective_from else datetime.now(UTC)
    with unit_of_work(_session_factory(settings)) as session:
        account = accounts.get_account(session, account_name)
        schedule_store.assign_schedule(session, account.id, schedule, moment)
    return f"{account_name} is priced by {schedule!r} from {moment.isoformat()}"


def list_schedules(settings: Settings) -> list[str]:
    with unit_of_work(_session_factory(settings)) as session:
        rows = schedule_store.list_versions(session)
        return [
            f"{row.schedule}@{row.version}  {row.currency}  from {row.effective_from.isoformat()}"
            for row in rows
        ]


def stripe_push(settings: Settings, period_text: str | None) -> list[str]:
    """Push the invoices not yet in Stripe (of one period when given), then the credit notes."""
    from billing.payments.stripe_sync import push_open_credit_notes, push_open_invoices, stripe_client
    from billing.settings import get_billing_settings

    client = stripe_client(get_billing_settings())
    period = Period.parse(period_text) if period_text else None
    session_factory = _session_factory(settings)
    results = push_open_invoices(session_factory, client, period)
    out = [
        f"{r.invoice_id}: " + (f"finalized as {r.stripe_invoice_id}" if r.finalized else "nothing to push")
        for r in results
    ] or ["no invoices to push"]
    for note_id, stripe_id in push_open_credit_notes(session_factory, client):
        out.append(
            f"{note_id}: "
            + (f"Stripe credit note {stripe_id}" if stripe_id else "its invoice is not in Stripe yet")
        )
    return out


def credit_note(settings: Settings, invoice_id: str, reason: str, line_specs: list[str]) -> list[str]:
    """Issue a credit note on an invoice: each of ``line_specs`` is ``N`` (all that invoice line has
    left) or ``N:AMOUNT`` (major units, e.g. ``3:1.50``)."""
    with unit_of_work(_session_factory(settings)) as session:
        invoice = session.get(Invoice, invoice_id)
        currency = invoice.currency if invoice is not None else "usd"
        requests = [_credit_request(spec, currency) for spec in line_specs]
        note = issue_credit_note(session, None, invoice_id, reason=reason, credits=requests)
        total = minor_to_decimal(note.total_minor, note.currency)
        return [f"issued credit note {note.id} (no. {note.number}) on {invoice_id}: {total} {note.currency}"]


def _credit_request(spec: str, currency: str) -> CreditRequest:
    number_text, _, amount_text = spec.partition(":")
    try:
        number = int(number_text)
        amount = None if not amount_text else Decimal(amount_text)
    except (ValueError, InvalidOperation) as error:
        raise InvalidRequestError(f"--line {spec!r} is not N or N:AMOUNT", param="line") from error
    if amount is None:
        return CreditRequest(number)
    exponent = MINOR_UNIT_EXPONENTS[currency]
    if places(amount) > exponent:
        raise InvalidRequestError(f"--line {spec!r}: more places than a {currency} minor unit", param="line")
    return CreditRequest(number, int(amount.scaleb(exponent)))


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidRequestError(
            f"{text!r} is not an ISO 8601 date or date-time", param="effective_from"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The dashboard's usage ranges that a sample of this many days fills exactly (api.dashboard.ranges).
_USAGE_VIEWS = {1: "Today", 7: "Last 7 days", 30: "Last 30 days"}


def sample_span(now: datetime, days: int) -> tuple[datetime, datetime]:
    """``[start, now)`` of the last ``days`` days as the dashboard's "Last N days" counts them (UTC):
    today so far and the ``days - 1`` whole days before it, so the view shows every sample request."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1), now


def sample_account(settings: Settings, name: str, num_requests: int, days: int) -> list[str]:
    """Create the new account ``name`` with ``num_requests`` sample requests over the last ``days``
    days (``sample_span``; ``billing.sample_ledger``), to try the dashboard; refuses an existing account."""
    if num_requests < 1 or days < 1:
        raise InvalidRequestError("--requests and --days must be at least 1")
    start, end = sample_span(datetime.now(UTC), days)
    with unit_of_work(_session_factory(settings)) as session:
        accounts.create_account(session, name)  # ConflictError for an existing account
        ledger = write_sample_ledger(
            session,
            account_name=name,
            num_requests=num_requests,
            start=start,
            end=end,
            models=(settings.model_name,),
            num_keys=1,
        )
    view = _USAGE_VIEWS.get(days)
    return [
        f"created account {name} with {ledger.num_requests:,} sample requests in {len(ledger.batch_ids)} batches "
        f"from {start:%Y-%m-%d %H:%M} UTC to now"
        + (f" (the dashboard's “{view}” shows all of them today)" if view else ""),
        "its API key (shown once) — sign in to /dashboard with it:",
        f"    {ledger.api_key_secrets[0]}",
    ]

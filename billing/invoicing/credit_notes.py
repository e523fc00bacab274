"""Credit notes: an issued invoice is corrected by giving money back on some of its lines, never by
editing it (its lines and totals stay as issued; migrations 0006 and 0014 refuse edits).

A credit note names the invoice, a reason, and per invoice line the minor units it gives back
(billed money is whole minor units, so nothing is rounded here). The notes of an invoice together
never give back more of a line than the line charged, nor more in all than the invoice's total
(what was due after prepaid credit). Notes are numbered 1, 2, ... per invoice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoicing.invoices import invoice_lines
from hybatch.errors import InvalidRequestError, NotFoundError
from hybatch.ids import new_id
from hybatch.models import CreditNote, CreditNoteLine, Invoice, InvoiceCredit, InvoiceStatus, utc_now

MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class CreditRequest:
    """Give back ``amount_minor`` of invoice line ``invoice_line_number`` (None: all it has left)."""

    invoice_line_number: int
    amount_minor: int | None = None


def credit_notes_of(session: Session, invoice_id: str) -> list[tuple[CreditNote, list[CreditNoteLine]]]:
    """The invoice's credit notes in number order, each with its lines."""
    notes = list(
        session.scalars(
            sa.select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.number)
        )
    )
    lines: dict[str, list[CreditNoteLine]] = defaultdict(list)
    for line in session.scalars(
        sa.select(CreditNoteLine)
        .where(CreditNoteLine.credit_note_id.in_([note.id for note in notes]))
        .order_by(CreditNoteLine.credit_note_id, CreditNoteLine.line_number)
    ):
        lines[line.credit_note_id].append(line)
    return [(note, lines[note.id]) for note in notes]


def total_less_credit_notes(invoice: Invoice, notes: list[tuple[CreditNote, list[CreditNoteLine]]]) -> int:
    """Minor units the invoice comes to once ``notes`` (its ``credit_notes_of``) are given back; the
    invoice itself stays as issued."""
    return invoice.total_minor - sum(note.total_minor for note, _ in notes)


def credited_by_line(session: Session, invoice_id: str) -> dict[int, int]:
    """Minor units already given back per invoice line number."""
    credited: dict[int, int] = defaultdict(int)
    for _note, lines in credit_notes_of(session, invoice_id):
        for line in lines:
            credited[line.invoice_line_number] += line.amount_minor
    return dict(credited)


def issue_credit_note(
    session: Session,
    account_id: str | None,
    invoice_id: str,
    *,
    reason: str,
    credits: Sequence[CreditRequest],
) -> CreditNote:
    """Issue a credit note on a finalized invoice (of ``account_id`` when given); does not commit.

    Raises NotFoundError for an unknown invoice and InvalidRequestError naming every problem at
    once: no reason, no lines, a void invoice, an unknown or repeated line, an amount that is not
    positive, more than a line has left, more in all than the invoice has left.
    """
    invoice = session.get(Invoice, invoice_id)
    if invoice is None or account_id not in (None, invoice.account_id):
        raise NotFoundError(
            f"No invoice with id '{invoice_id}'.", code="invoice_not_found", param="invoice_id"
        )
    session.execute(sa.update(Invoice).where(Invoice.id == invoice.id).values(status=Invoice.status))  # lock
    lines = {line.line_number: line for line in invoice_lines(session, invoice.id)}
    credited = credited_by_line(session, invoice.id)
    problems = []
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        problems.append(f"a reason of 1 to {MAX_REASON_CHARS} characters is required")
    if invoice.status is InvoiceStatus.VOID:
        problems.append(f"invoice {invoice.id} is void")
    if not credits:
        problems.append("name at least one invoice line to credit")
    amounts: list[tuple[int, int]] = []
    seen: set[int] = set()
    for credit in credits:
        number = credit.invoice_line_number
        line = lines.get(number)
        if line is None:
            problems.append(f"invoice {invoice.id} has no line {number}")
            continue
        if number in seen:
            problems.append(f"line {number} is named twice")
            continue
        seen.add(number)
        left = line.amount_minor - credited.get(number, 0)
        amount = left if credit.amount_minor is None else credit.amount_minor
        if amount <= 0:
            problems.append(f"line {number}: nothing to give back ({amount} minor units)")
        elif amount > left:
            problems.append(f"line {number}: {amount} minor units is more than the {left} it has left")
        amounts.append((number, amount))
    total = sum(amount for _, amount in amounts)
    already = sum(credited.values())
    if total > invoice.total_minor - already:
        problem = f"{total} minor units is more than the invoice has left to give back ({invoice.total_minor - already})"
        prepaid = session.get(InvoiceCredit, invoice.id)
        if prepaid is not None and prepaid.amount_minor > 0:
            # What the grants paid was never due on the invoice: it goes back as credit, not a note.
            problem += (
                f"; prepaid credit paid {prepaid.amount_minor} of it: give that back with "
                "hybatch credits grant"
            )
        problems.append(problem)
    if problems:
        raise InvalidRequestError("; ".join(problems), code="invalid_credit_note", param="lines")
    number = 1 + (
        session.scalar(sa.select(sa.func.max(CreditNote.number)).where(CreditNote.invoice_id == invoice.id))
        or 0
    )
    note = CreditNote(
        id=new_id("cn_"),
        invoice_id=invoice.id,
        account_id=invoice.account_id,
        number=number,
        reason=reason,
        currency=invoice.currency,
        total_minor=total,
        created_at=utc_now(),
    )
    session.add(note)
    session.flush()
    session.add_all(
        CreditNoteLine(
            credit_note_id=note.id, line_number=index, invoice_line_number=line_number, amount_minor=amount
        )
        for index, (line_number, amount) in enumerate(amounts, start=1)
    )
    session.flush()
    return note

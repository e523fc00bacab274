"""An invoice as a PDF an operator can send: one A4 page per ~30 lines, text that can be copied.

Laid out with fpdf2 (pure Python) in its built-in Helvetica, so no font files are needed; those
fonts cover Windows-1252, which holds every character ``billing.money_text`` writes (€, £, ¥, –, —).
Any other character (an account name in another script) prints as ``?``. The figures are the
``InvoiceDocument``'s text, unchanged: the PDF says exactly what the dashboard's invoice page says.
"""

from __future__ import annotations

from fpdf import FPDF, FontFace
from fpdf.enums import Align, TableBordersLayout, XPos, YPos

from billing.invoicing.invoice_document import InvoiceDocument, PrintedCreditNote, PrintedLine

_ENCODING = "windows-1252"  # what fpdf2's core fonts can print
_FONT = "helvetica"
# Columns of the line table (mm, summing to A4's 210 less two 15 mm margins).
_COLUMNS = (("#", 9), ("Description", 85), ("Tokens", 27), ("Unit price", 33), ("Amount", 26))
_ALIGN = ("RIGHT", "LEFT", "RIGHT", "RIGHT", "RIGHT")
# The credit-note table: the invoice page's columns (mm, the same 180 in all), in 8 pt so that a
# note's id and a time fit one line each.
_NOTE_COLUMNS = (("Note", 52), ("Issued", 34), ("Reason", 36), ("Lines", 36), ("Given back", 22))
_NOTE_ALIGN = ("LEFT", "LEFT", "LEFT", "LEFT", "RIGHT")
_GREY = (90, 90, 90)
_RULE_GREY = (200, 200, 200)


def _printable(text: str) -> str:
    """``text`` with what the core fonts cannot print replaced by ``?`` (instead of failing)."""
    return text.encode(_ENCODING, errors="replace").decode(_ENCODING)


class _InvoicePdf(FPDF):
    def __init__(self, document: InvoiceDocument) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.document = document
        self.core_fonts_encoding = _ENCODING
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=18)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_FONT, size=8)
        self.set_text_color(*_GREY)
        left = _printable(f"Invoice {self.document.invoice_id} · {self.document.period}")
        self.cell(0, 5, left, align=Align.L)
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align=Align.R)


def render_invoice_pdf(document: InvoiceDocument, *, issuer: str | None = None) -> bytes:
    """The invoice as PDF bytes. ``issuer``: who sends it (name, address; lines split on ``\\n``),
    printed top right when given. Deterministic: the same document gives the same bytes."""
    if issuer is not None:
        issuer = issuer.replace("\\n", "\n").strip() or None  # an env var spells newlines as \n
    pdf = _InvoicePdf(document)
    pdf.set_title(_printable(f"Invoice {document.invoice_id}"))
    pdf.set_author(_printable(issuer.splitlines()[0] if issuer else "hybatch"))
    pdf.set_creator("hybatch")
    pdf.set_creation_date(document.finalized_at)  # not the time of rendering: the same bytes each time
    pdf.add_page()
    _heading(pdf, document, issuer)
    _lines_table(pdf, document)
    if document.credit_notes:
        _credit_notes_table(pdf, document)
    pdf.ln(4)
    pdf.set_font(_FONT, size=8)
    pdf.set_text_color(*_GREY)
    pdf.multi_cell(
        0,
        4,
        "Unit prices are per million tokens. Tiers count the month's tokens of each model, token class "
        "and prompt length; each line's amount is rounded once to the currency's minor unit. "
        "Amounts in " + _printable(document.currency) + ".",
    )
    return bytes(pdf.output())


def _heading(pdf: FPDF, document: InvoiceDocument, issuer: str | None) -> None:
    top = pdf.get_y()
    if issuer:
        pdf.set_font(_FONT, size=9)
        pdf.set_xy(pdf.w - pdf.r_margin - 80, top)
        pdf.multi_cell(80, 5, _printable(issuer), align=Align.R)
    pdf.set_xy(pdf.l_margin, top)
    pdf.set_font(_FONT, style="B", size=20)
    pdf.cell(100, 10, "Invoice", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    facts = (
        ("Invoice", document.invoice_id),
        ("Account", document.account_name),
        ("Period", document.period),
        ("Status", document.status),
        ("Finalized", document.finalized),
        ("Currency", document.currency),
    )
    for label, value in facts:
        pdf.set_font(_FONT, style="B", size=9)
        pdf.cell(24, 5, label)
        pdf.set_font(_FONT, size=9)
        pdf.cell(0, 5, _printable(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(max(pdf.get_y(), top + 45) + 4)


def _description(line: PrintedLine) -> str:
    # Line 1 as the page's Model and Token class cells; line 2 its Prompt length and Monthly tokens.
    parts = [f"{line.model} · {line.token_class}", f"{line.prompt_length} · {line.monthly_tokens}"]
    if line.note is not None:
        parts.append(line.note)
    return _printable("\n".join(parts))


def _lines_table(pdf: FPDF, document: InvoiceDocument) -> None:
    pdf.set_font(_FONT, size=9)
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(*_RULE_GREY)
    with pdf.table(
        col_widths=tuple(width for _, width in _COLUMNS),
        text_align=_ALIGN,
        line_height=5,
        padding=1,  # mm; whole numbers: billing holds no float (tests/billing/test_no_float.py)
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=FontFace(emphasis="BOLD", fill_color=(238, 238, 238)),
        v_align="TOP",
    ) as table:
        table.row([title for title, _ in _COLUMNS])
        for line in document.lines:
            table.row(
                [
                    str(line.line_number),
                    _description(line),
                    line.tokens,
                    _printable(line.unit_price),
                    _printable(line.amount),
                ]
            )
        if document.credit is not None:  # the lines, less the prepaid credit, make the total
            for label, amount in (
                ("Subtotal", document.subtotal),
                ("Prepaid credit applied", document.credit),
            ):
                row = table.row()
                row.cell(label, colspan=4, align="RIGHT")
                row.cell(_printable(amount))
        row = table.row()
        row.cell("Total", colspan=4, align="RIGHT", style=FontFace(emphasis="BOLD"))
        row.cell(_printable(document.total), style=FontFace(emphasis="BOLD"))


def _credit_notes_table(pdf: FPDF, document: InvoiceDocument) -> None:
    """The credit notes issued on the invoice since, as the invoice page lists them, and the total
    less them (the lines above stay as issued)."""
    pdf.ln(6)
    pdf.set_font(_FONT, style="B", size=11)
    pdf.cell(0, 6, "Credit notes", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(_FONT, size=9)
    pdf.multi_cell(0, 5, "This invoice was corrected by credit notes; the invoice itself stays as issued.")
    pdf.ln(1)
    pdf.set_font(_FONT, size=8)
    with pdf.table(
        col_widths=tuple(width for _, width in _NOTE_COLUMNS),
        text_align=_NOTE_ALIGN,
        line_height=5,
        padding=1,
        borders_layout=TableBordersLayout.HORIZONTAL_LINES,
        headings_style=FontFace(emphasis="BOLD", fill_color=(238, 238, 238)),
        v_align="TOP",
    ) as table:
        table.row([title for title, _ in _NOTE_COLUMNS])
        for note in document.credit_notes:
            table.row([_printable(cell) for cell in _note_cells(note)])
        row = table.row()
        row.cell("Total less credit notes", colspan=4, align="RIGHT", style=FontFace(emphasis="BOLD"))
        row.cell(_printable(document.total_after_credit_notes or ""), style=FontFace(emphasis="BOLD"))


def _note_cells(note: PrintedCreditNote) -> tuple[str, ...]:
    return (
        f"no. {note.number}\n{note.credit_note_id}",
        note.issued,
        note.reason,
        note.lines,
        note.given_back,
    )

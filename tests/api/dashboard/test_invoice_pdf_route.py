"""``/dashboard/invoices/{id}/pdf``: the invoice page links it, the PDF prints each line as the page
shows it, and another account's invoice is not found."""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable

import pypdf
from fastapi.testclient import TestClient

from tests.api.dashboard.world import ADMIN_KEY, World
from tests.api.helpers import bearer


def _cells(page: str) -> list[dict[str, str]]:
    """The invoice lines table of the page, each row as {data-label: visible text}."""
    table = re.search(r'<table[^>]*id="invoice-lines".*?</table>', page, re.S).group(0)
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = re.findall(r'<td[^>]*data-label="([^"]+)"[^>]*>(.*?)</td>', row, re.S)
        rows.append({label: html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for label, text in cells})
    return rows


def _invoice_id(client: TestClient, secret: str) -> str:
    [invoice] = client.get("/v1/billing/invoices", headers=bearer(secret)).json()["data"]
    return invoice["id"]


def test_the_pdf_prints_what_the_invoice_page_shows(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    invoice_id = _invoice_id(client, world.alice_secret)
    page = client.get(f"/dashboard/invoices/{invoice_id}").text
    assert f'href="/dashboard/invoices/{invoice_id}/pdf"' in page
    response = client.get(f"/dashboard/invoices/{invoice_id}/pdf")
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert f"-{invoice_id}.pdf" in response.headers["content-disposition"]
    text = "\n".join(sheet.extract_text() for sheet in pypdf.PdfReader(io.BytesIO(response.content)).pages)
    rows = _cells(page)
    assert rows  # the world's closed month has lines
    for row in rows:
        printed = (
            f"{row['Model']} · {row['Token class']}\n{row['Prompt length']} · {row['Monthly tokens']}\n"
            f"{row['Tokens']} {row['Unit price']} {row['Amount']}"
        )
        assert printed in text, printed
    total = re.search(r'data-metric="invoice_total"[^>]*>([^<]+)<', page).group(1)
    assert f"Total {html.unescape(total)}" in text


def test_another_accounts_invoice_pdf_is_not_found(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    bobs = _invoice_id(client, world.bob_secret)
    assert client.get(f"/dashboard/invoices/{bobs}/pdf").status_code == 404
    assert client.get("/dashboard/invoices/inv_nonexistent/pdf").status_code == 404


def test_the_pdf_needs_a_signed_in_developer(browser_client: TestClient, world: World) -> None:
    response = browser_client.get("/dashboard/invoices/inv_any/pdf")
    assert response.status_code == 303 and "/dashboard/login" in response.headers["location"]


def test_operators_list_any_accounts_invoices_and_get_the_same_pdf(
    sign_in: Callable[[str], TestClient], world: World
) -> None:
    client = sign_in(world.alice_secret)
    invoice_id = _invoice_id(client, world.alice_secret)
    mine = client.get(f"/dashboard/invoices/{invoice_id}/pdf").content
    admin_pages = (
        f"/dashboard/admin/accounts/{world.alice_account_id}/invoices",
        f"/dashboard/admin/invoices/{invoice_id}/pdf",
    )
    assert [client.get(path).status_code for path in admin_pages] == [404, 404]  # developers: no such pages
    client.cookies.clear()
    operator = sign_in(ADMIN_KEY)
    usage = operator.get(f"/dashboard/admin/accounts/{world.alice_account_id}").text
    assert f'href="/dashboard/admin/accounts/{world.alice_account_id}/invoices"' in usage
    listing = operator.get(admin_pages[0]).text
    assert (
        f'href="/dashboard/admin/invoices/{invoice_id}/pdf"' in listing
        and str(world.closed_period) in listing
    )
    response = operator.get(admin_pages[1])
    assert response.headers["content-type"] == "application/pdf" and response.content == mine
    assert operator.get("/dashboard/admin/invoices/inv_nonexistent/pdf").status_code == 404
    assert operator.get("/dashboard/admin/accounts/acct_nonexistent/invoices").status_code == 404

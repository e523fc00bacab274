"""The developer dashboard: server-rendered pages under ``/dashboard`` on the API process.

Pages are HTML rendered from the same core functions the JSON API uses (``billing.usage.dashboard_summary``
shares its query with ``/v1/usage``); charts are SVG drawn on the server; one small script adds
live batch progress and sortable tables. Everything the browser loads is served from
``/dashboard/static`` (no CDN), under a strict Content-Security-Policy.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.dashboard import admin, auth, batches, invoice_pdf, invoices, serving_cost, usage, webhooks
from api.dashboard.deps import AdminHasNoAccount, SignInRequired
from api.dashboard.pages import STATIC_DIR, render_page_error
from api.dashboard.security import SecurityHeaders
from api.dashboard.session import SessionCodec, load_session_secret
from hybatch.settings import Settings


def _sign_in(request: Request, _error: Exception) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse({"error": {"message": "Sign in again."}}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = request.url_for("login_page").include_query_params(next=target)
    return RedirectResponse(login.path + "?" + login.query, status_code=303)


def _to_admin(_request: Request, _error: Exception) -> Response:
    return RedirectResponse("/dashboard/admin", status_code=303)


def install_dashboard(app: FastAPI, settings: Settings) -> None:
    """Mount the dashboard's pages, static files, error pages and security headers on ``app``."""
    app.state.session_codec = SessionCodec(load_session_secret(settings))
    app.state.render_page_error = render_page_error
    app.add_middleware(SecurityHeaders, path_prefixes=("/dashboard",))
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(AdminHasNoAccount, _to_admin)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    for module in (auth, usage, batches, invoices, invoice_pdf, webhooks, admin, serving_cost):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/dashboard", status_code=307)

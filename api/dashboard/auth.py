"""Sign-in with an API key (or the operator's admin key) and sign-out.

The key is posted once, checked, and never stored, echoed into a page or logged: the session
cookie names the account and the key's id. A failed sign-in re-renders an empty form.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.dashboard.deps import CheckedFormDep, CodecDep
from api.dashboard.pages import render
from api.dashboard.security import LOGIN_CSRF_COOKIE, check_csrf_token, check_same_origin
from api.dashboard.session import COOKIE_NAME, DashboardSession
from api.deps import SessionsDep, SettingsDep
from hybatch.accounts import authenticate
from hybatch.models import utc_now

router = APIRouter(prefix="/dashboard", include_in_schema=False)

LOGIN_CSRF_SECONDS = 3600


def _safe_next(target: str | None, default: str) -> str:
    """Only a path on this dashboard: never an absolute URL (no open redirect)."""
    if not target or not target.startswith("/dashboard") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def _login_form(
    request: Request, settings: SettingsDep, next_path: str, *, error: str | None, status_code: int
) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        csrf_token=token,
        next_path=next_path,
        error=error,
        admin_enabled=settings.admin_key is not None,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=LOGIN_CSRF_SECONDS,
        path="/dashboard/login",
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
    )
    return response


@router.get("/login")
def login_page(request: Request, settings: SettingsDep, next: str | None = None) -> Response:  # noqa: A002
    return _login_form(request, settings, _safe_next(next, "/dashboard"), error=None, status_code=200)


@router.post("/login")
def login(
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    codec: CodecDep,
    api_key: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",  # noqa: A002
) -> Response:
    check_same_origin(request)
    check_csrf_token(csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE))
    secret = api_key.strip()
    lifetime = timedelta(hours=settings.session_hours)
    now = utc_now()
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key is not None else None
    if secret and admin_key and hmac.compare_digest(secret.encode(), admin_key.encode()):
        session = DashboardSession.for_admin(codec.admin_fingerprint(admin_key), lifetime, now)
        destination = "/dashboard/admin"
    else:
        with sessions() as db:
            caller = authenticate(db, secret) if secret else None
        if caller is None:
            message = "Enter an API key." if not secret else "That API key is not valid (unknown or revoked)."
            return _login_form(
                request, settings, _safe_next(next, "/dashboard"), error=message, status_code=401
            )
        session = DashboardSession.for_developer(caller.account_id, caller.api_key_id, lifetime, now)
        destination = _safe_next(next, "/dashboard")
    response = RedirectResponse(destination, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        codec.encode(session),
        max_age=int(lifetime.total_seconds()),
        path="/dashboard",
        httponly=True,
        samesite="lax",  # links from elsewhere open the dashboard; forms still need the CSRF token
        secure=settings.cookie_secure,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
    return response


@router.post("/logout")
def logout(_viewer: CheckedFormDep, settings: SettingsDep) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(
        COOKIE_NAME, path="/dashboard", httponly=True, samesite="lax", secure=settings.cookie_secure
    )
    return response

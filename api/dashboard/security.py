"""Browser-facing protections: security headers on every dashboard response, and CSRF checks.

Pages load scripts, styles and images only from hybatch itself (``'self'``): no inline script or
style, no CDN, no framing. State-changing forms carry the session's CSRF token in a hidden field
and must come from this origin; the sign-in form, which has no session yet, pairs its hidden token
with a short-lived cookie (double submit).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hybatch.errors import PermissionDeniedError

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
LOGIN_CSRF_COOKIE = "hybatch_login_csrf"


class CsrfError(PermissionDeniedError):
    """A state-changing form without a valid token, or posted from another site (403)."""


class SecurityHeaders:
    """ASGI middleware: adds ``SECURITY_HEADERS`` to responses under ``path_prefixes``."""

    def __init__(self, app: ASGIApp, path_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.path_prefixes = path_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._applies(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith(("text/html", "application/json")):
                    headers.setdefault("cache-control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _applies(self, path: str) -> bool:
        return path == "/" or any(path.startswith(prefix) for prefix in self.path_prefixes)


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser says came from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise CsrfError("This form was posted from another site.", code="csrf_failed")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise CsrfError("This form was posted from another site.", code="csrf_failed")


def check_csrf_token(sent: str | None, expected: str | None) -> None:
    """Constant-time check that the form's token matches the one the page was given."""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfError(
            "This form has expired or did not come from this dashboard. Reload the page and try again.",
            code="csrf_failed",
        )

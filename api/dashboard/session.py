"""Dashboard sessions: a signed cookie naming who is signed in, checked again on every request.

The cookie holds ``base64url(json payload) "." base64url(HMAC-SHA256(secret, payload))``. The
payload names the account and the API key used to sign in (never the key itself), or an operator
session, plus a random CSRF token and an expiry. A valid signature is not enough: the key must
still be unrevoked, and an operator session must have been made with the admin key in force now.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from hybatch.settings import Settings

COOKIE_NAME = "hybatch_session"
SECRET_FILE_NAME = "session_secret"
SECRET_BYTES = 32


@dataclass(frozen=True)
class DashboardSession:
    """Who is signed in. Exactly one of ``api_key_id`` (a developer) or ``is_admin`` holds."""

    account_id: str | None
    api_key_id: str | None
    is_admin: bool
    csrf_token: str
    expires_at: int  # unix seconds
    admin_fingerprint: str | None = None  # ties an operator session to the admin key that made it

    @classmethod
    def for_developer(
        cls, account_id: str, api_key_id: str, lifetime: timedelta, now: datetime
    ) -> DashboardSession:
        return cls(account_id, api_key_id, False, secrets.token_urlsafe(24), _expiry(now, lifetime))

    @classmethod
    def for_admin(cls, fingerprint: str, lifetime: timedelta, now: datetime) -> DashboardSession:
        return cls(None, None, True, secrets.token_urlsafe(24), _expiry(now, lifetime), fingerprint)


def _expiry(now: datetime, lifetime: timedelta) -> int:
    return int((now + lifetime).timestamp())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and verifies session cookies with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._secret = secret

    def _signature(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode(self, session: DashboardSession) -> str:
        payload = json.dumps(
            {
                "a": session.account_id,
                "k": session.api_key_id,
                "adm": session.is_admin,
                "csrf": session.csrf_token,
                "exp": session.expires_at,
                "af": session.admin_fingerprint,
            },
            separators=(",", ":"),
        ).encode()
        return f"{_b64(payload)}.{_b64(self._signature(payload))}"

    def decode(self, cookie: str | None, now: datetime) -> DashboardSession | None:
        """The session in ``cookie``, or None when it is missing, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        encoded_payload, encoded_signature = cookie.split(".")
        try:
            payload = _unb64(encoded_payload)
            signature = _unb64(encoded_signature)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._signature(payload)):
            return None
        try:
            fields = json.loads(payload)
            session = DashboardSession(
                account_id=fields["a"],
                api_key_id=fields["k"],
                is_admin=bool(fields["adm"]),
                csrf_token=str(fields["csrf"]),
                expires_at=int(fields["exp"]),
                admin_fingerprint=fields.get("af"),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= now.timestamp():
            return None
        return session

    def admin_fingerprint(self, admin_key: str) -> str:
        """A value that changes when the admin key changes, without revealing it."""
        return _b64(hmac.new(self._secret, b"admin:" + admin_key.encode(), hashlib.sha256).digest()[:16])


def load_session_secret(settings: Settings) -> bytes:
    """``HYBATCH_SESSION_SECRET``, else the secret kept in ``DATA_DIR/session_secret`` (made once, mode 0600)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path: Path = settings.data_dir / SECRET_FILE_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{SECRET_FILE_NAME}.{secrets.token_hex(8)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(SECRET_BYTES))
        try:
            os.link(draft, path)  # atomic: a second process racing here keeps the first secret
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip().encode()

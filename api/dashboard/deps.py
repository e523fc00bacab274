"""Who is looking: ``ViewerDep`` (any signed-in person), ``DeveloperDep`` (an account's developer),
``AdminDep`` (an operator). A missing or stale session sends a page to the sign-in form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Form, Request

from api.dashboard.security import check_csrf_token, check_same_origin
from api.dashboard.session import COOKIE_NAME, DashboardSession, SessionCodec
from api.deps import SessionsDep
from hybatch.errors import NotFoundError
from hybatch.models import Account, ApiKey, utc_now


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in form, JSON endpoints answer 401."""


class AdminHasNoAccount(Exception):
    """An operator opened a developer page: they are sent to the all-accounts view."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in person. ``account_id`` is None for an operator."""

    session: DashboardSession
    account_id: str | None
    account_name: str | None
    key_prefix: str | None  # the visible prefix of the key used to sign in (never the secret)

    @property
    def is_admin(self) -> bool:
        return self.session.is_admin

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token


def get_codec(request: Request) -> SessionCodec:
    return request.app.state.session_codec


CodecDep = Annotated[SessionCodec, Depends(get_codec)]


def _admin_session_valid(request: Request, session: DashboardSession, codec: SessionCodec) -> bool:
    admin_key = request.app.state.settings.admin_key
    if admin_key is None or session.admin_fingerprint is None:
        return False
    return session.admin_fingerprint == codec.admin_fingerprint(admin_key.get_secret_value())


def get_viewer(request: Request, sessions: SessionsDep, codec: CodecDep) -> Viewer:
    session = codec.decode(request.cookies.get(COOKIE_NAME), utc_now())
    if session is None:
        raise SignInRequired()
    if session.is_admin:
        if not _admin_session_valid(request, session, codec):
            raise SignInRequired()
        return Viewer(session, None, None, None)
    with sessions() as db:  # a session of its own, closed before the route runs (see api.deps)
        row = db.execute(
            sa.select(Account.name, ApiKey.prefix)
            .join(ApiKey, ApiKey.account_id == Account.id)
            .where(
                ApiKey.id == session.api_key_id,
                ApiKey.account_id == session.account_id,
                ApiKey.revoked_at.is_(None),
            )
        ).first()
    if row is None:  # the key was revoked (or the account is gone): sign in again
        raise SignInRequired()
    return Viewer(session, session.account_id, row.name, row.prefix)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def viewer_if_signed_in(request: Request) -> Viewer | None:
    """The signed-in viewer of a request no dependency has checked (an error page), else None.

    Opens a session of its own; the same checks as ``ViewerDep`` (signature, expiry, key not revoked).
    """
    try:
        return get_viewer(request, request.app.state.session_factory, get_codec(request))
    except SignInRequired:
        return None
    except sa.exc.SQLAlchemyError:  # the error page must render when the database is what failed
        return None


@dataclass(frozen=True)
class Developer(Viewer):
    """A developer's session: always names its account."""

    account_id: str


def get_developer(viewer: ViewerDep) -> Developer:
    """A developer's session; operators have no account of their own and go to the admin view."""
    if viewer.is_admin or viewer.account_id is None:
        raise AdminHasNoAccount()
    return Developer(viewer.session, viewer.account_id, viewer.account_name, viewer.key_prefix)


def get_admin(viewer: ViewerDep) -> Viewer:
    if not viewer.is_admin:
        raise NotFoundError("This page does not exist.", code="not_found")  # no hint that it does
    return viewer


DeveloperDep = Annotated[Developer, Depends(get_developer)]
AdminDep = Annotated[Viewer, Depends(get_admin)]


def _check_form(request: Request, sent_token: str, viewer: Viewer) -> None:
    check_same_origin(request)
    check_csrf_token(sent_token, viewer.csrf_token)


def checked_form(request: Request, viewer: ViewerDep, csrf_token: Annotated[str, Form()] = "") -> Viewer:
    """A state-changing form of the signed-in viewer, from this origin, with their CSRF token."""
    _check_form(request, csrf_token, viewer)
    return viewer


def checked_developer_form(
    request: Request, developer: DeveloperDep, csrf_token: Annotated[str, Form()] = ""
) -> Developer:
    """As ``checked_form``, for a developer's own objects."""
    _check_form(request, csrf_token, developer)
    return developer


CheckedFormDep = Annotated[Viewer, Depends(checked_form)]
CheckedDeveloperFormDep = Annotated[Developer, Depends(checked_developer_form)]

"""Typed dependencies, so route signatures read like sentences.

``SessionDep`` a database session for this request; ``CurrentCaller`` the authenticated
account and key (401 otherwise); ``StorageDep``, ``SettingsDep``, ``EnqueueDep`` the app's
file storage, settings and batch enqueuer (set once in ``create_app``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from hybatch.accounts import Caller, authenticate
from hybatch.batches import BatchEnqueuer
from hybatch.errors import AuthenticationError
from hybatch.settings import Settings
from hybatch.storage import FileStorage


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_caller(request: Request, session: SessionDep) -> Caller:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'."
        )
    caller = authenticate(session, secret.strip())
    if caller is None:
        raise AuthenticationError("Incorrect or revoked API key provided.", code="invalid_api_key")
    return caller


CurrentCaller = Annotated[Caller, Depends(get_caller)]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_storage(request: Request) -> FileStorage:
    return request.app.state.storage


def get_enqueue(request: Request) -> BatchEnqueuer:
    return request.app.state.enqueue


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[FileStorage, Depends(get_storage)]
EnqueueDep = Annotated[BatchEnqueuer, Depends(get_enqueue)]

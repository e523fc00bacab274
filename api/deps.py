"""Typed dependencies, so route signatures read like sentences.

``SessionsDep`` opens database sessions (``with sessions() as session:``); ``CurrentCaller`` the
authenticated account and key (401 otherwise); ``StorageDep``, ``SettingsDep``, ``EnqueueDep`` the
app's file storage, settings and batch enqueuer (set once in ``create_app``).

A pooled database connection never outlives the thread call that checked it out. Sync routes and
sync dependencies each run on a thread of their own from a bounded pool (``HYBATCH_API_THREADS``),
and FastAPI validates a sync route's return value on yet another. A request that kept a connection
from one of those calls to the next would wait for a thread while holding it; under load every
thread then waits for a connection held that way, and nothing moves until the pool timeout
(measured: 4 req/s and timeouts at 100 clients). So ``get_caller`` authenticates in a session of
its own and routes close theirs before they return: no connection is held while a request waits
for a thread, an upload is written to storage or a download streams.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from hybatch.accounts import Caller, authenticate
from hybatch.batches import BatchEnqueuer
from hybatch.errors import AuthenticationError
from hybatch.settings import Settings
from hybatch.storage import FileStorage


# The plain getters are async: they only read app.state, and a sync one would take a thread.
async def get_sessions(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]


def get_caller(request: Request, sessions: SessionsDep) -> Caller:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'."
        )
    with sessions() as session:
        caller = authenticate(session, secret.strip())
    if caller is None:
        raise AuthenticationError("Incorrect or revoked API key provided.", code="invalid_api_key")
    return caller


CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_storage(request: Request) -> FileStorage:
    return request.app.state.storage


async def get_enqueue(request: Request) -> BatchEnqueuer:
    return request.app.state.enqueue


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[FileStorage, Depends(get_storage)]
EnqueueDep = Annotated[BatchEnqueuer, Depends(get_enqueue)]

"""What an API process does around serving: size its thread pool, sweep abandoned uploads and
expired files.

An upload killed mid-way (the process died while writing) leaves an invisible ``.partial`` object
in the file storage. The API removes those idle for longer than ``HYBATCH_PARTIAL_MAX_AGE_S`` once
at start-up and then every ``HYBATCH_PARTIAL_SWEEP_INTERVAL_S`` (0: only at start-up), on a thread,
so a slow store never holds up requests. Every ``HYBATCH_EXPIRED_FILES_SWEEP_INTERVAL_S`` it
deletes files past their ``expires_at`` (``hybatch.files.delete_expired_files``; they answer 404
from the moment they expire). A failed sweep is logged and tried again next time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from hybatch import files
from hybatch.settings import Settings
from hybatch.storage import FileStorage

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    storage: FileStorage = app.state.storage
    # Sync routes run on anyio's default limiter (40 threads unless told otherwise).
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    max_age = timedelta(seconds=settings.partial_max_age_s)
    await sweep_partial_uploads(storage, max_age)
    async with anyio.create_task_group() as background:
        if settings.partial_sweep_interval_s > 0:
            background.start_soon(_sweep_every, storage, settings.partial_sweep_interval_s, max_age)
        if settings.expired_files_sweep_interval_s > 0:
            background.start_soon(
                _delete_expired_every,
                app.state.session_factory,
                storage,
                settings.expired_files_sweep_interval_s,
            )
        yield
        background.cancel_scope.cancel()


async def sweep_partial_uploads(storage: FileStorage, max_age: timedelta) -> int | None:
    """Remove unfinished uploads idle longer than ``max_age``; how many, or None if the sweep failed."""
    try:
        num_swept = await anyio.to_thread.run_sync(storage.sweep_incomplete, max_age)
    except Exception:  # a store that is down now must not stop the API; the next sweep tries again
        log.exception("sweeping unfinished uploads failed")
        return None
    if num_swept:
        log.info("removed %d unfinished upload(s) idle for more than %s", num_swept, max_age)
    return num_swept


async def _sweep_every(storage: FileStorage, interval_s: float, max_age: timedelta) -> None:
    while True:
        await anyio.sleep(interval_s)
        await sweep_partial_uploads(storage, max_age)


async def delete_expired_files(session_factory: sessionmaker[Session], storage: FileStorage) -> int | None:
    """Delete the files past their expiry; how many, or None if the sweep failed."""

    def sweep() -> int:
        with session_factory() as session:
            return files.delete_expired_files(session, storage)

    try:
        num_deleted = await anyio.to_thread.run_sync(sweep)
    except Exception:  # the database or the store is down now: the next sweep tries again
        log.exception("deleting expired files failed")
        return None
    if num_deleted:
        log.info("deleted %d expired file(s)", num_deleted)
    return num_deleted


async def _delete_expired_every(
    session_factory: sessionmaker[Session], storage: FileStorage, interval_s: float
) -> None:
    while True:
        await anyio.sleep(interval_s)
        await delete_expired_files(session_factory, storage)

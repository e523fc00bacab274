"""``/dashboard/batches``: the account's batches with live progress, one batch, cancel, downloads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from api.dashboard.batch_progress import progress_of, progress_of_all
from api.dashboard.deps import CheckedDeveloperFormDep, DeveloperDep
from api.dashboard.pages import render
from api.deps import SessionsDep, StorageDep
from api.downloads import file_download
from hybatch import batches, files
from hybatch.models import utc_now

router = APIRouter(prefix="/dashboard", include_in_schema=False)

PAGE_SIZE = 20
MAX_LIVE_IDS = 100


@router.get("/batches")
def batches_page(
    request: Request, viewer: DeveloperDep, sessions: SessionsDep, after: str | None = None
) -> HTMLResponse:
    with sessions() as db:
        page = batches.list_batches(db, viewer.account_id, after=after, limit=PAGE_SIZE)
        now = utc_now()
        return render(
            request,
            "batches.html",
            viewer,
            active="batches",
            rows=progress_of_all(db, page.items, now),
            has_more=page.has_more,
            next_after=page.items[-1].id if page.items and page.has_more else None,
        )


@router.get("/batches/progress.json")
def batches_progress(
    viewer: DeveloperDep, sessions: SessionsDep, ids: Annotated[str, Query(max_length=4000)] = ""
) -> dict[str, Any]:
    """Live fields of the viewer's batches named in ``ids`` (comma-separated); others are left out."""
    with sessions() as db:
        wanted = [batch_id for batch_id in ids.split(",") if batch_id][:MAX_LIVE_IDS]
        now = utc_now()
        found = batches.find_batches(db, viewer.account_id, wanted)
        return {"batches": [row.as_live_fields() for row in progress_of_all(db, found, now)]}


@router.get("/batches/{batch_id}")
def batch_page(request: Request, viewer: DeveloperDep, sessions: SessionsDep, batch_id: str) -> HTMLResponse:
    with sessions() as db:
        batch = batches.get_batch(db, viewer.account_id, batch_id)
        return render(request, "batch.html", viewer, active="batches", row=progress_of(db, batch, utc_now()))


@router.get("/batches/{batch_id}/cancel")
def cancel_confirmation(
    request: Request, viewer: DeveloperDep, sessions: SessionsDep, batch_id: str
) -> HTMLResponse:
    with sessions() as db:
        batch = batches.get_batch(db, viewer.account_id, batch_id)
        return render(request, "cancel.html", viewer, active="batches", row=progress_of(db, batch, utc_now()))


@router.post("/batches/{batch_id}/cancel")
def cancel(developer: CheckedDeveloperFormDep, sessions: SessionsDep, batch_id: str) -> Response:
    with sessions() as db:
        batches.cancel_batch(db, developer.account_id, batch_id)
        return RedirectResponse(f"/dashboard/batches/{batch_id}", status_code=303)


@router.get("/files/{file_id}")
def download(
    viewer: DeveloperDep, sessions: SessionsDep, storage: StorageDep, file_id: str
) -> StreamingResponse:
    """One of the account's files as an attachment (output and error files of its batches)."""
    with sessions() as db:
        return file_download(storage, files.get_file(db, viewer.account_id, file_id), as_attachment=True)

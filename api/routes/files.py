"""``/v1/files``: upload (multipart, streamed), list, retrieve, download, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import CurrentCaller, SessionDep, SettingsDep, StorageDep
from api.downloads import file_download
from api.schemas import FileDeleted, FileObject, ListPage
from hybatch import files
from hybatch.storage import iter_chunks

router = APIRouter(prefix="/v1/files", tags=["files"])

MAX_LIST_LIMIT = 10_000


@router.post("")
def create_file(
    caller: CurrentCaller,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    file: UploadFile,
    purpose: Annotated[str, Form()],
) -> FileObject:
    stored = files.upload_file(
        session,
        storage,
        account_id=caller.account_id,
        filename=file.filename or "upload.jsonl",
        purpose=purpose,
        chunks=iter_chunks(file.file),
        max_file_bytes=settings.max_file_bytes,
    )
    return FileObject.from_row(stored)


@router.get("")
def list_files(
    caller: CurrentCaller,
    session: SessionDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
) -> ListPage[FileObject]:
    page = files.list_files(
        session, caller.account_id, purpose=purpose, after=after, limit=limit, descending=order == "desc"
    )
    return ListPage.of([FileObject.from_row(row) for row in page.items], page.has_more)


@router.get("/{file_id}")
def retrieve_file(caller: CurrentCaller, session: SessionDep, file_id: str) -> FileObject:
    return FileObject.from_row(files.get_file(session, caller.account_id, file_id))


@router.get("/{file_id}/content")
def download_file(
    caller: CurrentCaller, session: SessionDep, storage: StorageDep, file_id: str
) -> StreamingResponse:
    return file_download(storage, files.get_file(session, caller.account_id, file_id), as_attachment=False)


@router.delete("/{file_id}")
def delete_file(caller: CurrentCaller, session: SessionDep, storage: StorageDep, file_id: str) -> FileDeleted:
    deleted = files.delete_file(session, storage, caller.account_id, file_id)
    return FileDeleted(id=deleted.id, deleted=True)

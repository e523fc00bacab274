"""``/v1/files``: upload (multipart, streamed), list, retrieve, download, delete."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import CurrentCaller, SessionsDep, SettingsDep, StorageDep
from api.downloads import file_download
from api.openapi import binary_response, error_responses
from api.schemas import FileDeleted, FileObject, ListPage
from hybatch import files
from hybatch.storage import iter_chunks

router = APIRouter(prefix="/v1/files", tags=["files"])

MAX_LIST_LIMIT = 10_000


@router.post("", responses=error_responses(400, 401, 413))
def create_file(
    caller: CurrentCaller,
    sessions: SessionsDep,
    storage: StorageDep,
    settings: SettingsDep,
    file: UploadFile,
    purpose: Annotated[str, Form()],
    # OpenAI's multipart spelling of expires_after = {anchor, seconds}
    expires_after_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_after_seconds: Annotated[int | None, Form(alias="expires_after[seconds]")] = None,
) -> FileObject:
    expires_after_s = files.check_expires_after(
        expires_after_anchor, expires_after_seconds, param="expires_after"
    )
    # The session checks out a connection only for the row, once the bytes are stored and checked:
    # none is held while they stream into storage.
    with sessions() as session:
        stored = files.upload_file(
            session,
            storage,
            account_id=caller.account_id,
            filename=file.filename or "upload.jsonl",
            purpose=purpose,
            chunks=iter_chunks(file.file),
            max_file_bytes=settings.max_file_bytes,
            expires_after_s=expires_after_s,
        )
        return FileObject.from_row(stored)


@router.get("", responses=error_responses(400, 401))
def list_files(
    caller: CurrentCaller,
    sessions: SessionsDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT,
    order: Literal["asc", "desc"] = "desc",
) -> ListPage[FileObject]:
    with sessions() as session:
        page = files.list_files(
            session, caller.account_id, purpose=purpose, after=after, limit=limit, descending=order == "desc"
        )
        return ListPage.of([FileObject.from_row(row) for row in page.items], page.has_more)


@router.get("/{file_id}", responses=error_responses(401, 404))
def retrieve_file(caller: CurrentCaller, sessions: SessionsDep, file_id: str) -> FileObject:
    with sessions() as session:
        return FileObject.from_row(files.get_file(session, caller.account_id, file_id))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={**binary_response("The file's bytes"), **error_responses(401, 404)},
)
def download_file(
    caller: CurrentCaller, sessions: SessionsDep, storage: StorageDep, file_id: str
) -> StreamingResponse:
    with sessions() as session:
        row = files.get_file(session, caller.account_id, file_id)
    return file_download(storage, row, as_attachment=False)  # streams with the session closed


@router.delete("/{file_id}", responses=error_responses(401, 404, 409))
def delete_file(
    caller: CurrentCaller, sessions: SessionsDep, storage: StorageDep, file_id: str
) -> FileDeleted:
    with sessions() as session:
        deleted = files.delete_file(session, storage, caller.account_id, file_id)
        return FileDeleted(id=deleted.id, deleted=True)

"""Files: streamed uploads checked on the way in, account-scoped reads, soft deletes.

An upload is written to storage chunk by chunk while its bytes are checked (size limit,
UTF-8 without BOM, one JSON object per line); only then is its row committed. Any failure
removes the stored bytes, so a rejected upload leaves neither a row nor a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hybatch.batch_lifecycle import UNFINISHED
from hybatch.errors import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from hybatch.ids import new_file_id
from hybatch.jsonl import JsonlLine, JsonlProblem, JsonlReader
from hybatch.models import Batch, File, FilePurpose, FileStatus, utc_now
from hybatch.pagination import Page, paginate
from hybatch.storage import FileStorage, iter_chunks

UPLOADABLE_PURPOSES = (FilePurpose.BATCH,)
MAX_FILENAME_CHARS = 255


def upload_file(
    session: Session,
    storage: FileStorage,
    *,
    account_id: str,
    filename: str,
    purpose: str,
    chunks: Iterable[bytes],
    max_file_bytes: int,
) -> File:
    """Store an uploaded batch input file and commit its row; on any error nothing remains.

    Raises InvalidRequestError (bad purpose or content) or PayloadTooLargeError.
    """
    if purpose not in UPLOADABLE_PURPOSES:
        allowed = ", ".join(f"'{p.value}'" for p in UPLOADABLE_PURPOSES)
        raise InvalidRequestError(
            f"Invalid purpose {purpose!r}: this service accepts {allowed}.",
            param="purpose",
            code="invalid_value",
        )
    file_id = new_file_id()
    size_bytes = _store_checked(storage, file_id, chunks, max_file_bytes)
    try:
        row = File(
            id=file_id,
            account_id=account_id,
            filename=filename[-MAX_FILENAME_CHARS:] or "upload.jsonl",
            purpose=FilePurpose(purpose),
            status=FileStatus.PROCESSED,
            size_bytes=size_bytes,
        )
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        storage.delete(file_id)
        raise
    return row


def _store_checked(storage: FileStorage, file_id: str, chunks: Iterable[bytes], max_file_bytes: int) -> int:
    reader = JsonlReader()
    size_bytes = 0
    with storage.open_write(file_id) as writer:
        for chunk in chunks:
            size_bytes += len(chunk)
            if size_bytes > max_file_bytes:
                raise PayloadTooLargeError(
                    f"File is larger than the limit of {max_file_bytes} bytes.",
                    param="file",
                    code="file_too_large",
                )
            _raise_first_problem(reader.feed(chunk))
            writer.write(chunk)
        _raise_first_problem(reader.finish())
    return size_bytes


def _raise_first_problem(results: list[JsonlLine | JsonlProblem]) -> None:
    for result in results:
        problem = result if isinstance(result, JsonlProblem) else result.problem
        if problem is not None:
            where = f" (line {problem.line})" if problem.line is not None else ""
            raise InvalidRequestError(f"{problem.message}{where}", param="file", code=problem.code)


def _visible_files(account_id: str) -> sa.Select[tuple[File]]:
    return sa.select(File).where(File.account_id == account_id, File.deleted_at.is_(None))


def get_file(session: Session, account_id: str, file_id: str) -> File:
    """The account's file ``file_id``; raises NotFoundError for unknown, deleted or foreign ids."""
    row = session.scalar(_visible_files(account_id).where(File.id == file_id))
    if row is None:
        raise NotFoundError(f"No such File object: {file_id}", param="id")
    return row


def list_files(
    session: Session,
    account_id: str,
    *,
    purpose: str | None,
    after: str | None,
    limit: int,
    descending: bool,
) -> Page[File]:
    query = _visible_files(account_id)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    return paginate(session, query, File, after=after, limit=limit, descending=descending)


def open_file_content(storage: FileStorage, file: File) -> Iterator[bytes]:
    """The stored bytes of ``file`` as chunks; opened now, so a missing blob fails before streaming."""
    try:
        reader = storage.open_read(file.id)
    except FileNotFoundError as error:
        raise NotFoundError(f"The content of {file.id} is no longer available.", param="id") from error
    return _chunks_then_close(reader)


def _chunks_then_close(reader: BinaryIO) -> Iterator[bytes]:
    with reader:
        yield from iter_chunks(reader)


def delete_file(session: Session, storage: FileStorage, account_id: str, file_id: str) -> File:
    """Hide the file and remove its bytes; refused while an unfinished batch reads it."""
    row = get_file(session, account_id, file_id)
    busy_batch = session.scalar(
        sa.select(Batch.id).where(Batch.input_file_id == file_id, Batch.status.in_(UNFINISHED))
    )
    if busy_batch is not None:
        raise ConflictError(
            f"File {file_id} is the input of batch {busy_batch}, which has not finished.",
            param="id",
            code="file_in_use",
        )
    row.deleted_at = utc_now()
    session.commit()
    storage.delete(file_id)
    return row

"""Files: streamed uploads checked on the way in, account-scoped reads, soft deletes, expiry.

An upload is written to storage chunk by chunk while its bytes are checked (size limit,
UTF-8 without BOM, one JSON object per line); only then is its row committed. Any failure
removes the stored bytes, so a rejected upload leaves neither a row nor a file.

Expiry is OpenAI's: an upload may say ``expires_after = {anchor: created_at, seconds: N}`` with N
from an hour to 30 days; a ``purpose=batch`` upload that does not expires after 30 days. A batch's
``output_expires_after`` does the same for its output and error files. Once expired, a file answers
404 like a deleted one, and ``delete_expired_files`` (run periodically by the API) removes its bytes
and marks it deleted; the input of a batch that has not finished is kept until the batch ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
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
MIN_EXPIRY_S = 3600  # an hour: the bounds of OpenAI's expires_after.seconds
MAX_EXPIRY_S = 2_592_000  # 30 days
DEFAULT_EXPIRY_S = {FilePurpose.BATCH: MAX_EXPIRY_S}  # purposes not named here never expire
EXPIRY_ANCHORS = ("created_at",)
EXPIRED_PER_SWEEP = 500


def check_expires_after(anchor: str | None, seconds: int | None, *, param: str) -> int | None:
    """The seconds of an ``expires_after`` policy (None when none was given); raises
    InvalidRequestError, naming ``param``, for an anchor other than ``created_at`` or seconds
    outside an hour to 30 days."""
    if anchor is None and seconds is None:
        return None
    if anchor not in EXPIRY_ANCHORS:
        raise InvalidRequestError(
            f"Invalid {param}.anchor {anchor!r}: the supported anchor is 'created_at'.",
            param=f"{param}.anchor",
            code="invalid_value",
        )
    if seconds is None or isinstance(seconds, bool) or not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise InvalidRequestError(
            f"Invalid {param}.seconds {seconds!r}: it must be between {MIN_EXPIRY_S} (1 hour) and "
            f"{MAX_EXPIRY_S} (30 days).",
            param=f"{param}.seconds",
            code="invalid_value",
        )
    return seconds


def upload_file(
    session: Session,
    storage: FileStorage,
    *,
    account_id: str,
    filename: str,
    purpose: str,
    chunks: Iterable[bytes],
    max_file_bytes: int,
    expires_after_s: int | None = None,
) -> File:
    """Store an uploaded batch input file and commit its row; on any error nothing remains.

    ``expires_after_s`` (checked by ``check_expires_after``) counts from the upload; None takes
    the purpose's default. Raises InvalidRequestError (bad purpose or content) or
    PayloadTooLargeError.
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
    created_at = utc_now()
    seconds = expires_after_s if expires_after_s is not None else DEFAULT_EXPIRY_S.get(FilePurpose(purpose))
    try:
        row = File(
            id=file_id,
            account_id=account_id,
            filename=filename[-MAX_FILENAME_CHARS:] or "upload.jsonl",
            purpose=FilePurpose(purpose),
            status=FileStatus.PROCESSED,
            size_bytes=size_bytes,
            created_at=created_at,
            expires_at=None if seconds is None else created_at + timedelta(seconds=seconds),
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
    return sa.select(File).where(
        File.account_id == account_id,
        File.deleted_at.is_(None),
        sa.or_(File.expires_at.is_(None), File.expires_at > utc_now()),
    )


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


def delete_expired_files(session: Session, storage: FileStorage, now: datetime | None = None) -> int:
    """Mark up to ``EXPIRED_PER_SWEEP`` expired files deleted and remove their bytes; returns how many.

    Each file is claimed with one conditional UPDATE (several API processes may sweep at once) and
    committed before its bytes go. The input file of a batch that has not finished is left for a
    later sweep: the batch may still read it.
    """
    now = now or utc_now()
    busy_inputs = sa.select(Batch.input_file_id).where(Batch.status.in_(UNFINISHED))
    expired = session.scalars(
        sa.select(File.id)
        .where(File.deleted_at.is_(None), File.expires_at <= now, File.id.not_in(busy_inputs))
        .order_by(File.expires_at)
        .limit(EXPIRED_PER_SWEEP)
    ).all()
    session.commit()
    num_deleted = 0
    for file_id in expired:
        claimed = session.execute(
            sa.update(File).where(File.id == file_id, File.deleted_at.is_(None)).values(deleted_at=now)
        )
        session.commit()
        if claimed.rowcount == 1:
            storage.delete(file_id)
            num_deleted += 1
    return num_deleted

"""File bytes, kept outside the database behind a small interface an object store can implement.

Writes are atomic: bytes go to a temporary object that becomes visible under its id only when
the writer closes without an exception, so a failed or oversize upload leaves nothing behind.
A writer killed mid-upload leaves an invisible temporary object; ``sweep_incomplete`` removes
those once they are old enough that no live writer can still own them.

This module holds the interface and the local-directory storage; ``storage_s3`` the object store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from hybatch.errors import HybatchError
from hybatch.settings import Settings

CHUNK_BYTES = 1024 * 1024
PARTIAL_SUFFIX = ".partial"


class FileStorage(Protocol):
    """Where file contents live, addressed by file id. Implementations must be process-safe."""

    def open_write(self, file_id: str) -> AbstractContextManager[BinaryIO]:
        """Context manager yielding a binary writer; the file exists only after a clean exit."""
        ...

    def open_read(self, file_id: str) -> BinaryIO:
        """Binary reader over the whole file; raises FileNotFoundError when absent."""
        ...

    def size_bytes(self, file_id: str) -> int:
        """Size of the stored file; raises FileNotFoundError when absent."""
        ...

    def delete(self, file_id: str) -> None:
        """Remove the file; deleting an absent file is not an error."""
        ...

    def sweep_incomplete(self, older_than: timedelta) -> int:
        """Remove unfinished writes idle for longer than ``older_than``; returns how many.

        Only writers that died (a killed process) should be that old: pick ``older_than`` well
        above the longest upload, since a live write that is swept fails (and leaves nothing).
        """
        ...


def iter_chunks(reader: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Read ``reader`` to the end in chunks of at most ``chunk_bytes``."""
    while chunk := reader.read(chunk_bytes):
        yield chunk


def check_file_id(file_id: str) -> str:
    """``file_id`` itself, once it is known not to name a path or a hidden temporary object."""
    if not file_id or "/" in file_id or file_id.startswith("."):
        raise ValueError(f"not a storable file id: {file_id!r}")
    return file_id


def storage_from_settings(settings: Settings) -> FileStorage:
    """The storage the settings name: ``HYBATCH_FILES_URL`` (s3://) if set, else ``HYBATCH_FILES_DIR``."""
    if settings.files_url is None:
        return LocalFileStorage(settings.files_dir)
    try:
        # Imported here: boto3 is the optional `s3` extra, needed only where an object store is used.
        from hybatch.storage_s3 import S3FileStorage
    except ModuleNotFoundError as error:
        raise HybatchError(
            f"HYBATCH_FILES_URL={settings.files_url!r} needs boto3: install hybatch with the 's3' extra."
        ) from error
    return S3FileStorage.from_settings(settings)


class LocalFileStorage:
    """FileStorage on a local (or shared network) directory, one file per id.

    A write goes to ``.<id>.<pid>.partial`` and is renamed over ``<id>`` on a clean exit.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, file_id: str) -> Path:
        return self.root / check_file_id(file_id)

    @contextmanager
    def open_write(self, file_id: str) -> Iterator[BinaryIO]:
        final_path = self._path(file_id)
        partial_path = final_path.with_name(f".{file_id}.{os.getpid()}{PARTIAL_SUFFIX}")
        try:
            with open(partial_path, "wb") as writer:
                yield writer
                writer.flush()
                os.fsync(writer.fileno())
            os.replace(partial_path, final_path)
        finally:
            partial_path.unlink(missing_ok=True)

    def open_read(self, file_id: str) -> BinaryIO:
        return open(self._path(file_id), "rb")

    def size_bytes(self, file_id: str) -> int:
        return self._path(file_id).stat().st_size

    def delete(self, file_id: str) -> None:
        self._path(file_id).unlink(missing_ok=True)

    def sweep_incomplete(self, older_than: timedelta) -> int:
        # A partial file's mtime is its last write, so a slow upload that still writes stays.
        cutoff_s = time.time() - older_than.total_seconds()
        num_swept = 0
        for partial_path in self.root.glob(f".*{PARTIAL_SUFFIX}"):
            with suppress(FileNotFoundError):  # renamed or swept by someone else meanwhile
                if partial_path.stat().st_mtime < cutoff_s:
                    partial_path.unlink()
                    num_swept += 1
        return num_swept

"""File bytes, kept outside the database behind a small interface an object store can implement.

Writes are atomic: bytes go to a temporary object that becomes visible under its id only when
the writer closes without an exception, so a failed or oversize upload leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK_BYTES = 1024 * 1024


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


def iter_chunks(reader: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Read ``reader`` to the end in chunks of at most ``chunk_bytes``."""
    while chunk := reader.read(chunk_bytes):
        yield chunk


class LocalFileStorage:
    """FileStorage on a local (or shared network) directory, one file per id."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, file_id: str) -> Path:
        if not file_id or "/" in file_id or file_id.startswith("."):
            raise ValueError(f"not a storable file id: {file_id!r}")
        return self.root / file_id

    @contextmanager
    def open_write(self, file_id: str) -> Iterator[BinaryIO]:
        final_path = self._path(file_id)
        partial_path = final_path.with_name(f".{file_id}.{os.getpid()}.partial")
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

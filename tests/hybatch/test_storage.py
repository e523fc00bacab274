from pathlib import Path

import pytest

from hybatch.storage import LocalFileStorage, iter_chunks


def test_write_read_size_delete(storage: LocalFileStorage) -> None:
    with storage.open_write("file-abc") as writer:
        writer.write(b"hello ")
        writer.write(b"world")
    assert storage.size_bytes("file-abc") == 11
    with storage.open_read("file-abc") as reader:
        assert b"".join(iter_chunks(reader, chunk_bytes=4)) == b"hello world"
    storage.delete("file-abc")
    storage.delete("file-abc")  # absent is fine
    with pytest.raises(FileNotFoundError):
        storage.open_read("file-abc")


def test_failed_write_leaves_nothing(storage: LocalFileStorage) -> None:
    with pytest.raises(RuntimeError), storage.open_write("file-x") as writer:
        writer.write(b"partial")
        raise RuntimeError("upload aborted")
    with pytest.raises(FileNotFoundError):
        storage.size_bytes("file-x")
    assert list(Path(storage.root).iterdir()) == []


def test_rewrite_replaces_atomically(storage: LocalFileStorage) -> None:
    with storage.open_write("file-y") as writer:
        writer.write(b"old")
    with pytest.raises(RuntimeError), storage.open_write("file-y") as writer:
        writer.write(b"new but failed")
        raise RuntimeError
    with storage.open_read("file-y") as reader:
        assert reader.read() == b"old"


@pytest.mark.parametrize("bad_id", ["", "../etc/passwd", "a/b", ".hidden"])
def test_ids_cannot_escape_the_root(storage: LocalFileStorage, bad_id: str) -> None:
    with pytest.raises(ValueError):
        storage.open_read(bad_id)

"""The FileStorage contract, run against every storage: a local directory and a real S3 server.

Each backend also says how to look behind the interface (what is stored, visible or not; how many
bytes of an unfinished write already left the process), so the atomicity and streaming promises
are checked where the bytes actually are.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from sqlalchemy.orm import Session

from hybatch import files
from hybatch.db import make_engine
from hybatch.errors import PayloadTooLargeError
from hybatch.storage import FileStorage, LocalFileStorage, iter_chunks
from hybatch.storage_s3 import S3FileStorage
from tests.hybatch.s3_server import new_s3_storage, running_s3_server, stored_keys

MiB = 1024 * 1024
ABANDONED_AGE = timedelta(hours=2)


@dataclass(frozen=True)
class Backend:
    storage: FileStorage
    leftovers: Callable[[], list[str]]  # everything stored, finished or not
    bytes_sent: Callable[[str], int]  # bytes of file_id's unfinished write already stored
    max_held_bytes: int  # how much of a write may still be in the process's memory
    abandon: Callable[[str], None]  # leave a write as a process killed hours ago would
    swept_write_error: type[BaseException]  # what finishing a write fails with once it was swept


def _local_backend(root: Path) -> Backend:
    storage = LocalFileStorage(root)

    def partials(file_id: str) -> list[Path]:
        return list(root.glob(f".{file_id}.*.partial"))

    def abandon(file_id: str) -> None:
        path = root / f".{file_id}.424242.partial"
        path.write_bytes(b'{"custom_id": "a"}\n')
        then_s = time.time() - ABANDONED_AGE.total_seconds()
        os.utime(path, (then_s, then_s))

    return Backend(
        storage=storage,
        leftovers=lambda: sorted(path.name for path in root.iterdir()),
        bytes_sent=lambda file_id: sum(path.stat().st_size for path in partials(file_id)),
        max_held_bytes=io.DEFAULT_BUFFER_SIZE,
        abandon=abandon,
        swept_write_error=FileNotFoundError,
    )


def _s3_backend(storage: S3FileStorage) -> Backend:
    client, bucket = storage.client, storage.location.bucket

    def bytes_sent(file_id: str) -> int:
        key = storage.location.key(file_id)
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
        return sum(
            part["Size"]
            for upload in uploads
            for part in client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get(
                "Parts", []
            )
        )

    def abandon(file_id: str) -> None:
        # moto lists every unfinished upload as started on 2010-11-10, so any upload is old there;
        # test_storage_s3 checks against real timestamps that young uploads are kept.
        key = storage.location.key(file_id)
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)

    return Backend(
        storage=storage,
        leftovers=lambda: stored_keys(storage),
        bytes_sent=bytes_sent,
        max_held_bytes=storage.part_bytes,
        abandon=abandon,
        swept_write_error=ClientError,
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with running_s3_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local_backend(tmp_path / "files")
    return _s3_backend(new_s3_storage(request.getfixturevalue("s3_endpoint")))


@pytest.fixture
def storage(backend: Backend) -> FileStorage:
    return backend.storage


def _random_chunks(seed: int, num_chunks: int, chunk_bytes: int = MiB) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(num_chunks):
        yield rng.randbytes(chunk_bytes)


def _digest(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def test_write_read_size_delete(storage: FileStorage) -> None:
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
    with pytest.raises(FileNotFoundError):
        storage.size_bytes("file-abc")


def test_an_empty_file_is_a_file(storage: FileStorage) -> None:
    with storage.open_write("file-empty"):
        pass
    assert storage.size_bytes("file-empty") == 0
    with storage.open_read("file-empty") as reader:
        assert reader.read() == b""


@pytest.mark.parametrize("num_bytes", [7, 10 * MiB], ids=["small", "several-parts"])
def test_failed_write_leaves_nothing(backend: Backend, num_bytes: int) -> None:
    with pytest.raises(RuntimeError), backend.storage.open_write("file-x") as writer:
        writer.write(b"p" * num_bytes)
        raise RuntimeError("upload aborted")
    with pytest.raises(FileNotFoundError):
        backend.storage.size_bytes("file-x")
    assert backend.leftovers() == []


def test_rewrite_replaces_atomically(storage: FileStorage) -> None:
    with storage.open_write("file-y") as writer:
        writer.write(b"old")
    with pytest.raises(RuntimeError), storage.open_write("file-y") as writer:
        writer.write(b"new but failed" * MiB)
        raise RuntimeError
    with storage.open_read("file-y") as reader:
        assert reader.read() == b"old"


@pytest.mark.parametrize("bad_id", ["", "../etc/passwd", "a/b", ".hidden"])
def test_ids_cannot_escape_the_root(storage: FileStorage, bad_id: str) -> None:
    with pytest.raises(ValueError):
        storage.open_read(bad_id)
    with pytest.raises(ValueError), storage.open_write(bad_id):
        pass


def test_oversize_upload_leaves_nothing(backend: Backend, sqlite_url: str) -> None:
    line = b'{"custom_id": "r", "padding": "' + b"x" * 1000 + b'"}\n'
    chunk = line * (MiB // len(line))  # whole lines, about 1 MiB
    engine = make_engine(sqlite_url)
    with Session(engine) as session, pytest.raises(PayloadTooLargeError):
        files.upload_file(
            session,
            backend.storage,
            account_id="acct",
            filename="big.jsonl",
            purpose="batch",
            chunks=(chunk for _ in range(12)),
            max_file_bytes=10 * MiB,  # past one S3 part before the limit trips
        )
    engine.dispose()
    assert backend.leftovers() == []


def test_large_write_streams_out_as_it_goes(backend: Backend) -> None:
    num_chunks = 20  # 20 MiB: three S3 parts of 8 MiB
    written_bytes = 0
    with backend.storage.open_write("file-big") as writer:
        for chunk in _random_chunks(seed=1, num_chunks=num_chunks):
            writer.write(chunk)
            written_bytes += len(chunk)
            assert backend.bytes_sent("file-big") >= written_bytes - backend.max_held_bytes
    assert backend.storage.size_bytes("file-big") == num_chunks * MiB
    with backend.storage.open_read("file-big") as reader:
        assert _digest(iter_chunks(reader)) == _digest(_random_chunks(seed=1, num_chunks=num_chunks))


def test_concurrent_writers_to_different_ids(storage: FileStorage) -> None:
    num_writers, num_chunks = 4, 10  # 10 MiB each: two S3 parts

    def write(seed: int) -> None:
        with storage.open_write(f"file-{seed}") as writer:
            for chunk in _random_chunks(seed, num_chunks):
                writer.write(chunk)

    with ThreadPoolExecutor(max_workers=num_writers) as pool:
        list(pool.map(write, range(num_writers)))
    for seed in range(num_writers):
        with storage.open_read(f"file-{seed}") as reader:
            assert _digest(iter_chunks(reader)) == _digest(_random_chunks(seed, num_chunks))


def test_sweep_removes_abandoned_writes_and_keeps_files(backend: Backend) -> None:
    storage = backend.storage
    with storage.open_write("file-done") as writer:
        writer.write(b"kept")
    before = backend.leftovers()
    backend.abandon("file-killed")
    assert backend.leftovers() != before

    assert storage.sweep_incomplete(older_than=timedelta(hours=1)) == 1
    assert backend.leftovers() == before
    assert storage.sweep_incomplete(older_than=timedelta(hours=1)) == 0
    with storage.open_read("file-done") as reader:
        assert reader.read() == b"kept"


def test_local_sweep_keeps_writes_still_going(tmp_path: Path) -> None:
    storage = LocalFileStorage(tmp_path)
    with storage.open_write("file-live") as writer:
        writer.write(b"a")
        writer.flush()
        assert storage.sweep_incomplete(older_than=timedelta(minutes=1)) == 0
        writer.write(b"b")
    with storage.open_read("file-live") as reader:
        assert reader.read() == b"ab"


def test_a_live_write_that_is_swept_fails_and_leaves_nothing(backend: Backend) -> None:
    storage = backend.storage
    with pytest.raises(backend.swept_write_error), storage.open_write("file-slow") as writer:
        writer.write(b"s" * 9 * MiB)  # one S3 part out, the rest held
        assert storage.sweep_incomplete(older_than=timedelta(0)) == 1
    assert backend.leftovers() == []

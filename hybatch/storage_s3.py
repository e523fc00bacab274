"""File bytes in an S3-compatible object store (AWS S3, MinIO, Ceph), one object per id under a prefix.

Writes stream. Bytes are buffered up to one part (``PART_BYTES``) and sent as a part of a
multipart upload, so an upload of any size holds at most about one part in memory. The object
appears only when the upload is completed on a clean exit; any exception aborts it, so a failed
or oversize upload leaves nothing visible (the contract LocalFileStorage keeps with ``.partial``
and a rename). A write smaller than one part is a single PUT, atomic by itself.

An upload abandoned by a killed process stays invisible, but its parts stay stored (and billed)
until ``sweep_incomplete`` aborts it; a bucket lifecycle rule can do the same.

Reads stream too: ``open_read`` starts the GET (a missing object fails there) and the body is
pulled from the connection only as the caller reads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hybatch.settings import Settings
from hybatch.storage import CHUNK_BYTES, check_file_id

# S3 takes parts of 5 MiB to 5 GiB (the last may be smaller) and at most 10,000 of them.
PART_BYTES = 8 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024
# Checksums only where the API requires them: MinIO and Ceph releases predating S3's default
# CRC32 checksums reject or mishandle them on multipart uploads.
CLIENT_CONFIG = Config(
    retries={"mode": "standard"},
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; "" is the bucket's root)."""

    bucket: str
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> S3Location:
        """Parse ``s3://bucket`` or ``s3://bucket/some/prefix``."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, file_id: str) -> str:
        return self.key_prefix + check_file_id(file_id)


class S3FileStorage:
    """FileStorage on an S3-compatible bucket; ``client`` is a boto3 S3 client (thread-safe)."""

    def __init__(self, client: Any, location: S3Location, *, part_bytes: int = PART_BYTES) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes, not {part_bytes}")
        self.client = client
        self.location = location
        self.part_bytes = part_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> S3FileStorage:
        """Storage at ``HYBATCH_FILES_URL``; credentials come from boto3's standard chain."""
        if settings.files_url is None:
            raise ValueError("HYBATCH_FILES_URL is not set")
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=CLIENT_CONFIG,
        )
        return cls(client, S3Location.from_url(settings.files_url))

    @contextmanager
    def open_write(self, file_id: str) -> Iterator[BinaryIO]:
        upload = _StreamedUpload(
            self.client, self.location.bucket, self.location.key(file_id), self.part_bytes
        )
        try:
            yield upload  # write-only
            upload.finish()
        except BaseException:
            upload.abort()
            raise

    def open_read(self, file_id: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(file_id))
        except ClientError as error:
            if _is_missing(error):
                raise FileNotFoundError(f"no stored file {file_id!r}") from error
            raise
        return io.BufferedReader(_BodyStream(response["Body"]), buffer_size=CHUNK_BYTES)

    def size_bytes(self, file_id: str) -> int:
        try:
            response = self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(file_id))
        except ClientError as error:
            if _is_missing(error):
                raise FileNotFoundError(f"no stored file {file_id!r}") from error
            raise
        return response["ContentLength"]

    def delete(self, file_id: str) -> None:
        self.client.delete_object(Bucket=self.location.bucket, Key=self.location.key(file_id))

    def sweep_incomplete(self, older_than: timedelta) -> int:
        # An upload's age is counted from its start (S3 keeps no time of the last part).
        cutoff = datetime.now(UTC) - older_than
        num_swept = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.location.bucket, Prefix=self.location.key_prefix
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    _abort_quietly(self.client, self.location.bucket, upload["Key"], upload["UploadId"])
                    num_swept += 1
        return num_swept


class _StreamedUpload(io.BufferedIOBase):
    """Write-only stream: a part goes out each time ``part_bytes`` have gathered."""

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_bytes = part_bytes
        self._pending = bytearray()
        self._upload_id: str | None = None  # None until the first part: small files are one PUT
        self._parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self._pending += data
        while len(self._pending) >= self._part_bytes:
            with memoryview(self._pending) as pending:  # one copy of the part, not two
                part = bytes(pending[: self._part_bytes])
            del self._pending[: self._part_bytes]
            self._send_part(part)
        return len(data)

    def _send_part(self, part: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        part_number = len(self._parts) + 1
        sent = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=part_number, Body=part
        )
        self._parts.append({"PartNumber": part_number, "ETag": sent["ETag"]})

    def finish(self) -> None:
        """Make the object visible with everything written."""
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._pending))
        else:
            if self._pending:
                self._send_part(bytes(self._pending))
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._pending.clear()

    def abort(self) -> None:
        """Drop the parts sent so far; the object never appears."""
        self._pending.clear()
        if self._upload_id is not None:
            _abort_quietly(self._client, self._bucket, self._key, self._upload_id)


class _BodyStream(io.RawIOBase):
    """A GET response body (botocore's StreamingBody) as a raw stream, read only on demand."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _abort_quietly(client: Any, bucket: str, key: str, upload_id: str) -> None:
    # Called while another error is on its way out, or racing a writer that just finished: a
    # failed abort must not hide that error, and what it leaves is swept later.
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (BotoCoreError, ClientError) as error:
        log.warning("could not abort the upload of s3://%s/%s (%s): %s", bucket, key, upload_id, error)


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING_CODES

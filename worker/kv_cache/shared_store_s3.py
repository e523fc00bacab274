"""The shared tier in an S3-compatible bucket (AWS S3, MinIO, Ceph), for a fleet without a shared mount.

One object per entry, ``<prefix>/<namespace>/<block hash>.kv``, in the disk tier's format; the same
trust rules as the directory (``shared_tier.py``). A PUT is atomic (a reader sees the whole object or
none), so there are no temporary names; an entry already there (HEAD) is not written again. ``header``
reads only the first bytes (a ranged GET). Any S3 error on a read is a miss with a warning; any error
on a write turns the tier's writes off with a warning, and loads go on. Nothing here deletes: expire
old entries with a lifecycle rule on the prefix.

Credentials come from boto3's own chain (environment, profile, instance role), never from settings.
This module imports boto3: only ``open_shared_tier`` imports it, and only for an ``s3://`` URL.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Any

import boto3
import torch
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from worker.kv_cache.disk_store import SUFFIX, DiskEntry, encode_entry
from worker.kv_cache.shared_tier import checked_header, checked_payload

log = logging.getLogger(__name__)

# A header is about 300 bytes plus a few per token id; one ranged GET of this many bytes reads it
# whole for blocks of a few hundred tokens, a second one fetches the rest of a longer header.
HEADER_READ_BYTES = 4096
MAX_HEADER_BYTES = 1024 * 1024  # a longer length is damage: never read on (into a payload) for it
# A cache must not stall the engine: short timeouts, one retry. Checksums only where the API requires
# them (older MinIO and Ceph releases mishandle S3's default CRC32 checksums).
CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 2},
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_S3_ERRORS = (BotoCoreError, ClientError)


def _is_missing(error: Exception) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in _MISSING_CODES


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket`` or ``s3://bucket/some/prefix`` (no slashes at the ends)."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return bucket, prefix.strip("/")


class S3SharedStore:
    """``SharedTier`` on a bucket; ``client`` is a boto3 S3 client (thread-safe)."""

    def __init__(self, client: Any, bucket: str, prefix: str, namespace: str):
        """``namespace`` names the model and KV layout (``cache_namespace``); it is part of every key
        and of every header, and an object written under another one is never read."""
        self.client = client
        self.bucket = bucket
        self.namespace = namespace
        self.key_prefix = f"{prefix}/{namespace}/" if prefix else f"{namespace}/"
        self.writable = True
        self._reads_failing = False  # warn once when reads start failing, not once per prompt

    @classmethod
    def from_url(
        cls, url: str, namespace: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> S3SharedStore:
        """The store at ``s3://bucket/prefix``; ``endpoint_url`` for MinIO, Ceph or moto (None: AWS),
        ``region`` None: boto3's own. Sends no request yet."""
        bucket, prefix = parse_url(url)
        client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=CLIENT_CONFIG)
        return cls(client, bucket, prefix, namespace)

    def key(self, block_hash: bytes) -> str:
        return self.key_prefix + block_hash.hex() + SUFFIX

    def __contains__(self, block_hash: bytes) -> bool:
        try:
            return self._exists(block_hash)
        except _S3_ERRORS as error:
            self._read_failed(block_hash, error)
            return False

    def put(self, entry: DiskEntry, payload: torch.Tensor) -> bool:
        """Publishes the entry (one PUT: atomic); True when it is there now. An entry already there is
        left as it is (same hash, same namespace: the same KV)."""
        if not self.writable:
            return False
        try:
            if self._exists(entry.block_hash):
                return True
            body = encode_entry(entry, payload, {"namespace": self.namespace})
            self.client.put_object(Bucket=self.bucket, Key=self.key(entry.block_hash), Body=body)
        except _S3_ERRORS as error:
            self._write_failed(error)
            return False
        return True

    def header(self, expected: DiskEntry) -> DiskEntry | None:
        """The stored entry for ``expected.block_hash`` when its header matches ``expected`` (parent
        hash, token ids, depth and namespace); None otherwise. Reads the header only (ranged GETs)."""
        first = self._get(expected.block_hash, f"bytes=0-{HEADER_READ_BYTES - 1}")
        if first is None or len(first) < 8:
            return None
        (header_len,) = struct.unpack("<Q", first[:8])
        if header_len > MAX_HEADER_BYTES:
            return None
        raw = first[8 : 8 + header_len]
        if len(raw) < header_len and len(first) == HEADER_READ_BYTES:  # a long header: read the rest
            rest = self._get(expected.block_hash, f"bytes={HEADER_READ_BYTES}-{8 + header_len - 1}")
            raw += rest or b""
        try:
            parsed = json.loads(raw)
        except ValueError:
            return None
        return checked_header(parsed, self.namespace, expected) if isinstance(parsed, dict) else None

    def load(self, expected: DiskEntry) -> torch.Tensor | None:
        """The verified payload of the entry ``expected`` names (None: a miss, the object untouched)."""
        raw = self._get(expected.block_hash)
        if raw is None:
            return None
        return checked_payload(raw, self.namespace, expected, self.key(expected.block_hash))

    def _exists(self, block_hash: bytes) -> bool:
        """Whether the object is there (HEAD); raises on any other S3 error."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(block_hash))
        except ClientError as error:
            if _is_missing(error):
                return False
            raise
        return True

    def _get(self, block_hash: bytes, byte_range: str | None = None) -> bytes | None:
        """The object's bytes (or the range's); None when it is missing or the read failed."""
        extra = {"Range": byte_range} if byte_range else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(block_hash), **extra)
            with response["Body"] as body:
                raw = body.read()
        except _S3_ERRORS as error:
            if not _is_missing(error):
                self._read_failed(block_hash, error)
            return None
        if self._reads_failing:
            log.info("shared KV cache in s3://%s/%s reads again", self.bucket, self.key_prefix)
            self._reads_failing = False
        return raw

    def _read_failed(self, block_hash: bytes, error: Exception) -> None:
        if not self._reads_failing:
            log.warning(
                "shared KV cache read of s3://%s/%s failed (%s); treating it as a miss (and later "
                "failures quietly, until a read succeeds)",
                self.bucket,
                self.key(block_hash),
                error,
            )
            self._reads_failing = True

    def _write_failed(self, error: Exception) -> None:
        log.warning(
            "shared KV cache write to s3://%s/%s failed (%s); no more writes to the shared tier",
            self.bucket,
            self.key_prefix,
            error,
        )
        self.writable = False

"""The shared tier's interface and its trust rules, whatever holds the entries.

Two backends keep the same entries in the disk tier's format (``disk_store.py``), keyed by chained
block hash under the namespace (model + KV layout): ``shared_store.py`` in a directory every worker
mounts, ``shared_store_s3.py`` in an S3-compatible bucket. The prefix cache sees only ``SharedTier``.

What a load trusts is decided here, once for both: the payload's checksum and length, and the
header's namespace, block hash, parent hash, token ids and depth must equal what the prompt asks for
(and, for a payload, its window length); anything else is a miss. A reader never deletes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch

from worker.kv_cache.disk_store import DiskEntry, decode_entry

log = logging.getLogger(__name__)


class SharedTier(Protocol):
    """Entries every worker reads and writes. No method raises on a store error: a failed read is a
    miss, a failed write returns False and turns ``writable`` off for good (loads go on)."""

    namespace: str
    writable: bool

    def __contains__(self, block_hash: bytes) -> bool: ...

    def put(self, entry: DiskEntry, payload: torch.Tensor) -> bool:
        """Publishes the entry atomically (an entry already there is left as it is); True when it is
        there now."""
        ...

    def header(self, expected: DiskEntry) -> DiskEntry | None:
        """The stored entry for ``expected.block_hash`` when its header matches ``expected`` (parent
        hash, token ids, depth, namespace; any window length); None otherwise. Reads the header only."""
        ...

    def load(self, expected: DiskEntry) -> torch.Tensor | None:
        """The verified payload of the entry ``expected`` names; None: a miss (the entry untouched)."""
        ...


def open_shared_tier(
    namespace: str,
    directory: str | Path | None = None,
    url: str | None = None,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
) -> SharedTier | None:
    """The shared tier a directory or an ``s3://bucket/prefix`` URL names (None when neither is set).
    boto3 is imported only here, only for a URL: an engine without the shared tier needs none."""
    if directory and url:
        raise ValueError("the shared KV cache is a directory or an s3:// URL, not both")
    if directory:
        from worker.kv_cache.shared_store import SharedStore

        return SharedStore(directory, namespace)
    if not url:
        return None
    try:
        from worker.kv_cache.shared_store_s3 import S3SharedStore
    except ModuleNotFoundError as error:
        raise RuntimeError(
            f"a shared KV cache at {url!r} needs boto3: install hybatch with the 's3' extra"
        ) from error
    return S3SharedStore.from_url(url, namespace, endpoint_url=s3_endpoint_url, region=s3_region)


def same_prefix(entry: DiskEntry, expected: DiskEntry) -> bool:
    return (
        entry.block_hash == expected.block_hash
        and entry.parent_hash == expected.parent_hash
        and entry.token_ids == expected.token_ids
        and entry.depth == expected.depth
    )


def checked_header(raw: dict, namespace: str, expected: DiskEntry) -> DiskEntry | None:
    """The entry a parsed header describes when it is ``expected``'s prefix under ``namespace``."""
    try:
        entry = DiskEntry.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None
    return entry if raw.get("namespace") == namespace and same_prefix(entry, expected) else None


def checked_payload(raw: bytes, namespace: str, expected: DiskEntry, name: str) -> torch.Tensor | None:
    """The payload of an entry's bytes when checksum, length, header and window length are all what
    ``expected`` asks for; None (with a warning naming ``name``) otherwise."""
    try:
        header, payload = decode_entry(raw)
        entry = checked_header(header, namespace, expected)
    except ValueError as exc:
        log.warning("shared KV cache entry %s is unreadable (%s); treating it as a miss", name, exc)
        return None
    if entry is None:
        log.warning("shared KV cache entry %s is not the prefix asked for; treating it as a miss", name)
        return None
    if entry.window_len != expected.window_len:
        return None
    return payload

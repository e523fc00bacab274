"""The shared tier in a directory every worker reads and writes (an NFS mount, a shared volume), in
the disk tier's file format, so one worker loads a prefix another computed (``SharedTier``; the
trust rules live in ``shared_tier.py``, the S3 backend in ``shared_store_s3.py``).

No lock: many readers and writers. A write goes to a temporary name unique to its writer and is
renamed into place, so a reader sees a whole file or none. A load trusts nothing it cannot verify:
the checksum, the header's namespace (model + KV layout), block hash, parent hash and token ids must
equal what the prompt asks for; anything else (missing, partial, corrupt, another prefix) is a miss.
A reader never deletes: a file it cannot read may be another writer's, or another version's.
Entries are keyed by the chained block hash, which is salted with the cache salt, so accounts never
share an entry. Any OS error on write turns the tier's writes off with a warning; loads go on.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import uuid
from pathlib import Path

import torch

from worker.kv_cache.disk_store import SUFFIX, DiskEntry, encode_entry
from worker.kv_cache.shared_tier import checked_header, checked_payload

log = logging.getLogger(__name__)


class SharedStore:
    """``SharedTier`` on a directory: ``<directory>/<namespace>/<block hash>.kv``."""

    def __init__(self, directory: str | Path, namespace: str):
        """``namespace`` names the model and KV layout (``cache_namespace``); a file written under
        another one is never read."""
        self.namespace = namespace
        self.directory = Path(directory) / namespace
        self.writable = True
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("shared KV cache at %s is not writable (%s); reading only", self.directory, exc)
            self.writable = False

    def _path(self, block_hash: bytes) -> Path:
        return self.directory / (block_hash.hex() + SUFFIX)

    def __contains__(self, block_hash: bytes) -> bool:
        return self._path(block_hash).is_file()

    def put(self, entry: DiskEntry, payload: torch.Tensor) -> bool:
        """Publishes the entry (atomically: temporary name, then rename); True when it is there now.
        An entry already there is left as it is (same hash, same namespace: the same KV)."""
        path = self._path(entry.block_hash)
        if path.is_file():
            return True
        if not self.writable:
            return False
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(encode_entry(entry, payload, {"namespace": self.namespace}))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("shared KV cache write failed (%s); no more writes to the shared tier", exc)
            self.writable = False
            tmp.unlink(missing_ok=True)
            return False
        return True

    def header(self, expected: DiskEntry) -> DiskEntry | None:
        """The stored entry for ``expected.block_hash`` when its header matches ``expected`` (parent
        hash, token ids, depth and namespace); None otherwise. Reads the header only."""
        try:
            with open(self._path(expected.block_hash), "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                raw = json.loads(f.read(header_len))
        except (OSError, ValueError, struct.error):
            return None
        return checked_header(raw, self.namespace, expected) if isinstance(raw, dict) else None

    def load(self, expected: DiskEntry) -> torch.Tensor | None:
        """The verified payload of the entry ``expected`` names (None: a miss, the file untouched)."""
        path = self._path(expected.block_hash)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("shared KV cache entry %s is unreadable (%s); treating it as a miss", path.name, exc)
            return None
        return checked_payload(raw, self.namespace, expected, path.name)

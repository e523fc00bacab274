"""The local-disk tier: one checksummed file per cache entry, found again after a restart.

File layout: 8-byte little-endian header length, a JSON header (entry metadata, payload dtype and
element count, blake2b checksum of the payload), then the raw payload bytes. A file that is missing,
truncated or fails its checksum reads as a miss and is deleted. A lock file keeps a second worker from
using the same directory. Any OS error on write (disk full, read-only) turns the tier off with a
warning; the cache keeps working with the tiers above it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SUFFIX = ".kv"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CacheDirectoryInUse(RuntimeError):
    """Another worker holds the disk cache directory."""


@dataclass(frozen=True)
class DiskEntry:
    block_hash: bytes
    parent_hash: bytes | None
    token_ids: tuple[int, ...]
    depth: int
    window_len: int

    def to_json(self) -> dict:
        return {
            "block_hash": self.block_hash.hex(),
            "parent_hash": self.parent_hash.hex() if self.parent_hash else None,
            "token_ids": list(self.token_ids),
            "depth": self.depth,
            "window_len": self.window_len,
        }

    @classmethod
    def from_json(cls, raw: dict) -> DiskEntry:
        return cls(
            bytes.fromhex(raw["block_hash"]),
            bytes.fromhex(raw["parent_hash"]) if raw["parent_hash"] else None,
            tuple(raw["token_ids"]),
            int(raw["depth"]),
            int(raw["window_len"]),
        )


def encode_entry(entry: DiskEntry, payload: torch.Tensor, extra: dict | None = None) -> bytes:
    """The file bytes of one entry: header length, JSON header (``extra`` fields added), payload."""
    data = payload.contiguous().view(torch.uint8).numpy().tobytes()
    header = (
        entry.to_json()
        | (extra or {})
        | {
            "dtype": str(payload.dtype).removeprefix("torch."),
            "numel": payload.numel(),
            "checksum": hashlib.blake2b(data, digest_size=16).hexdigest(),
        }
    )
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


def decode_entry(raw: bytes) -> tuple[dict, torch.Tensor]:
    """The header and the verified payload of a file's bytes; ValueError when truncated or corrupt."""
    try:
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + header_len])
        data = raw[8 + header_len :]
        dtype = _DTYPES[header["dtype"]]
        if hashlib.blake2b(data, digest_size=16).hexdigest() != header["checksum"]:
            raise ValueError("checksum mismatch")
        payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)
    except (KeyError, TypeError, struct.error, json.JSONDecodeError, UnicodeDecodeError, RuntimeError) as exc:
        raise ValueError(f"unreadable entry ({exc})") from exc
    if payload.numel() != header["numel"]:
        raise ValueError("truncated payload")
    return header, payload


class DiskStore:
    def __init__(self, directory: str | Path, budget_bytes: int, namespace: str):
        """``namespace`` names the model and KV layout; entries of another namespace are ignored."""
        self.directory = Path(directory) / namespace
        self.budget_bytes = max(0, int(budget_bytes))
        self.enabled = self.budget_bytes > 0
        self._lock_file = None
        self.num_bytes = 0
        if self.enabled:
            self._open()

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.directory / ".lock", "a+")  # noqa: SIM115 (held for the store's lifetime)
        except OSError as exc:
            log.warning(
                "disk KV cache at %s is unavailable (%s); continuing without the disk tier",
                self.directory,
                exc,
            )
            self.enabled = False
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise CacheDirectoryInUse(
                f"disk KV cache directory {self.directory} is in use by {owner}; give each worker its own "
                "HYBATCH_DISK_CACHE_DIR"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        self._lock_file = lock
        self.num_bytes = sum(p.stat().st_size for p in self.directory.glob(f"*{SUFFIX}"))

    def close(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _path(self, block_hash: bytes) -> Path:
        return self.directory / (block_hash.hex() + SUFFIX)

    def put(self, entry: DiskEntry, payload: torch.Tensor) -> bool:
        """Writes the entry; False when the tier is off or the write failed (which turns it off)."""
        if not self.enabled:
            return False
        raw = encode_entry(entry, payload)
        size = len(raw)
        if size > self.budget_bytes:
            return False
        self._make_room(size)
        path = self._path(entry.block_hash)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("disk KV cache write failed (%s); turning the disk tier off", exc)
            self.enabled = False
            tmp.unlink(missing_ok=True)
            return False
        self.num_bytes += size
        return True

    def _make_room(self, size: int) -> None:
        if self.num_bytes + size <= self.budget_bytes:
            return
        files = sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        for path in files:
            if self.num_bytes + size <= self.budget_bytes:
                return
            self.num_bytes -= path.stat().st_size
            path.unlink(missing_ok=True)

    def load(self, block_hash: bytes) -> torch.Tensor | None:
        """The payload, or None (and the file removed) when it is missing, truncated or corrupt."""
        path = self._path(block_hash)
        try:
            _, payload = decode_entry(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("disk KV cache entry %s is unreadable (%s); treating it as a miss", path.name, exc)
            self.discard(block_hash)
            return None
        os.utime(path)  # LRU by modification time
        return payload

    def discard(self, block_hash: bytes) -> None:
        path = self._path(block_hash)
        try:
            self.num_bytes -= path.stat().st_size
            path.unlink()
        except OSError:
            pass

    def entries(self) -> list[DiskEntry]:
        """Headers of every readable entry (for rebuilding the tree after a restart)."""
        if not self.enabled:
            return []
        found = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            try:
                with open(path, "rb") as f:
                    (header_len,) = struct.unpack("<Q", f.read(8))
                    found.append(DiskEntry.from_json(json.loads(f.read(header_len))))
            except (OSError, ValueError, KeyError, struct.error):
                path.unlink(missing_ok=True)
        return found

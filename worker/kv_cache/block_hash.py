"""Chained content hashes of full KV blocks, salted per cache namespace (the account)."""

from __future__ import annotations

import hashlib
import struct


def chain_hash(parent: bytes | None, token_ids: list[int], salt: str | None) -> bytes:
    """Hash of a block = H(parent hash, salt, the block's token ids). Stable across processes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(parent or b"\x00" * 16)
    h.update((salt or "").encode())
    h.update(b"\x01")
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return h.digest()

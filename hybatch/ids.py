"""Public object ids shaped like OpenAI's: a type prefix plus random base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 24


def new_id(prefix: str) -> str:
    """A fresh id such as ``file-3xQ...`` or ``batch_9Fk...`` (``prefix`` includes its separator)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))


def new_file_id() -> str:
    return new_id("file-")


def new_batch_id() -> str:
    return new_id("batch_")


def new_account_id() -> str:
    return new_id("acct_")


def new_api_key_id() -> str:
    return new_id("key_")

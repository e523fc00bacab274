"""Public object ids shaped like OpenAI's: a type prefix plus random base62 characters."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 24


# Random bytes mapped onto the alphabet: byte b -> _ALPHABET[b % 62] for b < 248 (= 4 * 62), so
# every character is equally likely; bytes 248-255 are dropped. C-speed (an ending writes one id per
# error line, 50,000 at a time), and as uniform as a choice per character.
_USABLE_BYTES = 4 * len(_ALPHABET)
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _USABLE_BYTES else 0 for b in range(256))
_UNUSABLE = bytes(range(_USABLE_BYTES, 256))


def new_id(prefix: str) -> str:
    """A fresh id such as ``file-3xQ...`` or ``batch_9Fk...`` (``prefix`` includes its separator)."""
    chars = b""
    while len(chars) < _RANDOM_CHARS:
        chars += secrets.token_bytes(_RANDOM_CHARS + 8).translate(_TO_ALPHABET, delete=_UNUSABLE)
    return prefix + chars[:_RANDOM_CHARS].decode()


def new_file_id() -> str:
    return new_id("file-")


def new_batch_id() -> str:
    return new_id("batch_")


def new_account_id() -> str:
    return new_id("acct_")


def new_api_key_id() -> str:
    return new_id("key_")

"""Public ids: the prefix, 24 base62 characters, every character equally likely."""

from __future__ import annotations

import string
from collections import Counter

from hybatch.ids import new_batch_id, new_file_id, new_id

ALPHABET = set(string.ascii_letters + string.digits)


def test_ids_have_their_prefix_and_24_base62_characters() -> None:
    for made, prefix in (
        (new_file_id(), "file-"),
        (new_batch_id(), "batch_"),
        (new_id("batch_req_"), "batch_req_"),
    ):
        assert made.startswith(prefix)
        tail = made.removeprefix(prefix)
        assert len(tail) == 24 and set(tail) <= ALPHABET


def test_ids_do_not_repeat() -> None:
    ids = [new_id("x_") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_every_character_is_about_equally_likely() -> None:
    counts = Counter(char for _ in range(20_000) for char in new_id("x_")[2:])
    assert set(counts) == ALPHABET
    expected = 20_000 * 24 / 62  # 7,742 draws each
    # A skew as small as mapping all 256 byte values onto 62 characters (8 of them 5/256 instead of
    # 4/256, +25%) falls far outside this band; sampling noise (sd ~88) stays well inside.
    assert all(abs(count - expected) < 0.08 * expected for count in counts.values()), counts

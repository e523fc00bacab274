"""Incremental detokenization: the text of a growing list of output tokens, decoding only its tail."""

from __future__ import annotations

from collections.abc import Callable

# What a byte-level decoder shows for bytes that do not yet form a whole UTF-8 character.
REPLACEMENT_CHAR = "\ufffd"

Decode = Callable[[list[int]], str]


class IncrementalDetokenizer:
    """The text of a sequence's output tokens, the same after every step as decoding all of them.

    Tokens ``[0, read_offset)`` are *settled*: their text no longer changes as tokens are appended
    (it did not end in U+FFFD, an incomplete UTF-8 character that a later byte token may finish).
    A step decodes only tokens ``[prefix_offset, n)`` and keeps the text past the decode of
    ``[prefix_offset, read_offset)``: the settled tokens in front are context for decoders whose text
    for a token depends on its neighbour (a joining space, a stripped leading space)::

        tokens  [0 ........ prefix_offset ........ read_offset ........ n)
                 settled     context (settled, its    unsettled: decoded
                             last non-empty piece)    again each step

    Only the last ``keep_chars`` characters of settled text before the latest settled piece are
    held for ``text_since``; the whole text is joined once, by ``text()``.
    """

    def __init__(self, keep_chars: int) -> None:
        self.keep_chars = keep_chars
        self._reset()

    def _reset(self) -> None:
        self.prefix_offset = 0
        self.read_offset = 0
        self._pieces: list[str] = []  # the settled text, in the order it settled
        self._settled_len = 0
        self._recent = ""  # the settled text's last characters (see text_since)
        self._context = ""  # decode of tokens [prefix_offset, read_offset)
        self._unsettled = ""  # text of tokens [read_offset, n), as it reads after the settled text

    def __len__(self) -> int:
        """Characters in the text of all the tokens seen so far."""
        return self._settled_len + len(self._unsettled)

    def update(self, decode: Decode, token_ids: list[int], start: int = 0) -> None:
        """Takes the output tokens ``token_ids[start:]`` (all of them so far: the list only grows).

        Decodes ``token_ids[start + prefix_offset:]``: the unsettled tokens and their context.
        """
        window = decode(token_ids[start + self.prefix_offset :])
        if not window.startswith(self._context):
            # A decoder that rewrites text across the context boundary: start over from a decode of
            # every token (what a full decode gives, so the text stays exact).
            self._reset()
            window = decode(token_ids[start:])
        new_text = window[len(self._context) :]
        if new_text.endswith(REPLACEMENT_CHAR):
            self._unsettled = new_text  # may still change: not settled yet
            return
        num_tokens = len(token_ids) - start
        self._pieces.append(new_text)
        self._settled_len += len(new_text)
        self._recent = self._recent[-self.keep_chars :] + new_text if self.keep_chars else ""
        self._unsettled = ""
        if new_text:  # an empty piece (e.g. skipped special tokens) is no context: keep the old one
            self.prefix_offset = self.read_offset
        self.read_offset = num_tokens
        self._context = decode(token_ids[start + self.prefix_offset : start + self.read_offset])

    def text_since(self, position: int) -> str:
        """``text()[position:]``; ``position`` may be at most ``keep_chars`` characters before the end
        of the text as it was before the last ``update``.
        """
        recent_start = self._settled_len - len(self._recent)
        if position < recent_start:
            raise ValueError(f"text before character {recent_start} is no longer held (asked {position})")
        return (self._recent + self._unsettled)[position - recent_start :]

    def text(self) -> str:
        """The whole text (joins every settled piece: call it once, at the end)."""
        return "".join(self._pieces) + self._unsettled

"""Incremental JSONL reading: UTF-8 without BOM, one JSON object per line, problems with line numbers.

Bytes arrive in chunks of any size (an upload, a stored file); lines are yielded as soon as
they are complete, so a file is never held whole. Blank lines are skipped but counted, so
line numbers always match what an editor shows. A UTF-8 byte order mark is reported (as
OpenAI does) and then ignored so the remaining lines are still checked.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

BOM = "\ufeff"


@dataclass(frozen=True)
class JsonlProblem:
    """Something wrong with the file at ``line`` (1-based; None for the whole file)."""

    code: str
    line: int | None
    message: str


@dataclass(frozen=True)
class JsonlLine:
    """A complete, non-blank line: its parsed object, or the problem that prevented parsing."""

    line_number: int
    value: dict[str, Any] | None
    problem: JsonlProblem | None


class JsonlReader:
    """Feed bytes, get complete lines back. Call ``finish`` once at the end of the input."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._pending = ""
        self._lines_done = 0  # physical lines fully consumed, blank ones included
        self._num_objects = 0
        self._at_start = True
        self._broken = False  # after an encoding error nothing further can be trusted

    @property
    def num_objects(self) -> int:
        """Non-blank lines seen so far."""
        return self._num_objects

    def feed(self, chunk: bytes) -> list[JsonlLine | JsonlProblem]:
        """Consume ``chunk``; return the lines it completed and any file-level problems."""
        if self._broken:
            return []
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as error:
            return [self._encoding_problem(chunk, error.start)]
        return self._take(text, final=False)

    def finish(self) -> list[JsonlLine | JsonlProblem]:
        """Flush the last line; report an empty file or a truncated UTF-8 sequence."""
        if self._broken:
            return []
        try:
            text = self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return [self._encoding_problem(b"", 0)]
        results = self._take(text, final=True)
        if self._num_objects == 0:
            results.append(JsonlProblem("empty_file", None, "The input file is empty."))
        return results

    def _encoding_problem(self, chunk: bytes, error_offset: int) -> JsonlProblem:
        self._broken = True
        line = self._lines_done + self._pending.count("\n") + chunk[:error_offset].count(b"\n") + 1
        return JsonlProblem("invalid_file_encoding", line, "The file is not valid UTF-8.")

    def _take(self, text: str, *, final: bool) -> list[JsonlLine | JsonlProblem]:
        results: list[JsonlLine | JsonlProblem] = []
        if self._at_start and (text or final):
            self._at_start = False
            if text.startswith(BOM):
                text = text[len(BOM) :]
                results.append(
                    JsonlProblem(
                        "invalid_file_format",
                        1,
                        "The file starts with a byte order mark (BOM); save it as UTF-8 without BOM.",
                    )
                )
        lines = (self._pending + text).split("\n")
        self._pending = "" if final else lines.pop()
        for raw_line in lines:
            self._lines_done += 1
            if raw_line.strip():
                results.append(self._parse(raw_line))
        return results

    def _parse(self, raw_line: str) -> JsonlLine:
        self._num_objects += 1
        line_number = self._lines_done
        try:
            value = json.loads(raw_line, parse_constant=_reject_constant)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            problem = JsonlProblem(
                "invalid_json_line", line_number, "This line is not parseable as a JSON object."
            )
            return JsonlLine(line_number, None, problem)
        return JsonlLine(line_number, value, None)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def iter_jsonl(chunks: Iterable[bytes]) -> Iterator[JsonlLine | JsonlProblem]:
    """All lines and problems of a chunked byte stream, in file order."""
    reader = JsonlReader()
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.finish()

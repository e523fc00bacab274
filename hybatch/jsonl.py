"""Incremental JSONL reading: UTF-8 without BOM, one JSON object per line, problems with line numbers.

Bytes arrive in chunks of any size (an upload, a stored file); lines are yielded as soon as
they are complete, so a file is never held whole. Blank lines are skipped but counted, so
line numbers always match what an editor shows. A UTF-8 byte order mark is reported (as
OpenAI does) and then ignored so the remaining lines are still checked.

A line whose objects and arrays nest deeper than ``MAX_JSON_DEPTH`` is refused like any other bad
line (``invalid_json_line``): everything downstream (request validation, the worker, rendering the
results) may walk a body recursively, and Python's recursion limit is about 1,000 frames.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

BOM = "\ufeff"
# `{}` and `[]` are depth 1; `{"a": [1]}` is depth 2. Generous for request bodies (a JSON schema
# in `response_format` or a tool's parameters nests maybe 10-20 levels), far below the recursion limit.
MAX_JSON_DEPTH = 100


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
        except RecursionError:  # nested ~1,000 deep: the decoder gave up before our own check
            return JsonlLine(line_number, None, _too_deep(line_number))
        except ValueError:
            value = None
        if not isinstance(value, dict):
            problem = JsonlProblem(
                "invalid_json_line", line_number, "This line is not parseable as a JSON object."
            )
            return JsonlLine(line_number, None, problem)
        if _nests_deeper_than(raw_line, value, MAX_JSON_DEPTH):
            return JsonlLine(line_number, None, _too_deep(line_number))
        return JsonlLine(line_number, value, None)


def _too_deep(line_number: int) -> JsonlProblem:
    return JsonlProblem(
        "invalid_json_line",
        line_number,
        f"This line nests objects or arrays more than {MAX_JSON_DEPTH} levels deep.",
    )


def _nests_deeper_than(raw_line: str, value: dict[str, Any], max_depth: int) -> bool:
    """Whether ``value`` (parsed from ``raw_line``) nests containers deeper than ``max_depth``.

    Iterative, so no depth can exhaust the stack. Most lines are settled by counting brackets in C:
    the depth is at most the number of opening brackets (those inside strings only add to it).
    """
    if raw_line.count("{") + raw_line.count("[") <= max_depth:
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def iter_jsonl(chunks: Iterable[bytes]) -> Iterator[JsonlLine | JsonlProblem]:
    """All lines and problems of a chunked byte stream, in file order."""
    reader = JsonlReader()
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.finish()

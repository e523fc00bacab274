import json

import pytest

from hybatch.jsonl import MAX_JSON_DEPTH, JsonlLine, JsonlProblem, iter_jsonl


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _summary(items) -> list[tuple]:
    return [
        ("problem", item.code, item.line)
        if isinstance(item, JsonlProblem)
        else ("line", item.line_number, item.value, item.problem and item.problem.code)
        for item in items
    ]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 1024])
def test_lines_survive_any_chunking(chunk_bytes: int) -> None:
    objects = [{"a": "héllo ✓"}, {"b": [1, 2]}, {"c": "😀"}]
    data = "\n".join(json.dumps(o, ensure_ascii=False) for o in objects).encode() + b"\r\n\n  \n"
    items = list(iter_jsonl(_chunked(data, chunk_bytes)))
    assert all(isinstance(item, JsonlLine) and item.problem is None for item in items)
    assert [item.value for item in items] == objects
    assert [item.line_number for item in items] == [1, 2, 3]


def test_blank_lines_are_skipped_but_counted() -> None:
    items = list(iter_jsonl([b'\n{"a": 1}\n\n{"b": 2}']))
    assert [(i.line_number, i.value) for i in items] == [(2, {"a": 1}), (4, {"b": 2})]


def test_bad_lines_are_reported_and_reading_goes_on() -> None:
    data = b'{"ok": 1}\n{broken\n[1]\n"text"\n{"x": NaN}\n{"ok": 2}\n'
    assert _summary(iter_jsonl([data])) == [
        ("line", 1, {"ok": 1}, None),
        ("line", 2, None, "invalid_json_line"),
        ("line", 3, None, "invalid_json_line"),
        ("line", 4, None, "invalid_json_line"),
        ("line", 5, None, "invalid_json_line"),
        ("line", 6, {"ok": 2}, None),
    ]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 1024])
def test_invalid_utf8_stops_with_its_line(chunk_bytes: int) -> None:
    data = b'{"a": 1}\n{"b": 2}\n{"c": "\xc3\x28"}\n{"d": 4}\n'
    items = list(iter_jsonl(_chunked(data, chunk_bytes)))
    assert items[-1] == JsonlProblem("invalid_file_encoding", 3, "The file is not valid UTF-8.")
    assert [i.line_number for i in items if isinstance(i, JsonlLine)] == [1, 2][: len(items) - 1]


def test_truncated_utf8_at_end_of_file() -> None:
    items = list(iter_jsonl([b'{"a": 1}\n{"b": "\xe2\x82']))
    assert isinstance(items[-1], JsonlProblem) and items[-1].code == "invalid_file_encoding"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 1024])
def test_bom_is_reported_then_ignored(chunk_bytes: int) -> None:
    items = list(iter_jsonl(_chunked(b'\xef\xbb\xbf{"a": 1}\n', chunk_bytes)))
    assert _summary(items) == [("problem", "invalid_file_format", 1), ("line", 1, {"a": 1}, None)]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"   \r\n"])
def test_empty_files(data: bytes) -> None:
    assert _summary(iter_jsonl([data])) == [("problem", "empty_file", None)]


def _nested(depth: int) -> str:
    """An object holding arrays nested so that the line's depth is ``depth`` (the object counts)."""
    return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    items = list(iter_jsonl([_nested(MAX_JSON_DEPTH).encode()]))
    assert _summary(items)[0][3] is None


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 10_000])
def test_nesting_over_the_limit_is_a_bad_line_and_reading_goes_on(depth: int) -> None:
    data = f'{{"ok": 1}}\n{_nested(depth)}\n{{"ok": 2}}\n'.encode()
    items = list(iter_jsonl([data]))
    assert _summary(items) == [
        ("line", 1, {"ok": 1}, None),
        ("line", 2, None, "invalid_json_line"),
        ("line", 3, {"ok": 2}, None),
    ]
    assert f"more than {MAX_JSON_DEPTH} levels" in items[1].problem.message


def test_a_bare_array_10000_deep_is_a_bad_line() -> None:
    items = list(iter_jsonl([b"[" * 10_000 + b"]" * 10_000 + b"\n"]))
    assert _summary(items) == [("line", 1, None, "invalid_json_line")]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    line = json.dumps({"a": "[" * 500, "b": [{"c": "{" * 500}]})
    assert _summary(iter_jsonl([line.encode()]))[0][3] is None

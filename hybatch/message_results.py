"""The results of an ended Message Batch, as Anthropic's ``.jsonl``: one line per request.

Each is ``{"custom_id", "result": {...}}`` with the result derived from our output and error
lines: ``succeeded`` (with the Message the worker rendered, ``hybatch.message_lines``),
``errored`` (``{"type": "error", "error": {"type", "message"}}``), ``canceled`` or ``expired``.
A succeeded result keeps the line's ``x_billing`` (our additive extension: token classes and
cost). Requests that ended with no line at all (a batch cancelled before any worker took it)
come from the input file, typed by how the batch ended. Order: output lines, then error lines,
then those (Anthropic does not promise the input order either).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from hybatch.files import get_file, open_file_content
from hybatch.jsonl import JsonlLine, iter_jsonl
from hybatch.message_batches import CANCELLED_CODE, EXPIRED_CODE, unrecorded_type
from hybatch.models import Batch, BatchStatus, File
from hybatch.storage import FileStorage

_TYPE_BY_CODE = {CANCELLED_CODE: "canceled", EXPIRED_CODE: "expired"}
# Error lines whose cause is the request itself; any other failure is ours (api_error).
_REQUEST_CODES = frozenset({"invalid_request", "skipped_budget"})


@dataclass(frozen=True)
class ResultSources:
    """The files the results are read from, and how the batch ended (read while a session is open)."""

    status: BatchStatus
    output_file: File | None
    error_file: File | None
    input_file: File | None  # only when some request ended with no line


def result_sources(session: Session, batch: Batch) -> ResultSources:
    """The batch's files (NotFoundError when one was deleted or has expired)."""

    def file(file_id: str | None) -> File | None:
        return None if file_id is None else get_file(session, batch.account_id, file_id)

    unrecorded = batch.completed_requests + batch.failed_requests < batch.total_requests
    return ResultSources(
        status=batch.status,
        output_file=file(batch.output_file_id),
        error_file=file(batch.error_file_id),
        input_file=file(batch.input_file_id) if unrecorded else None,
    )


def individual_result(line: dict[str, Any]) -> dict[str, Any]:
    """One result of Anthropic's ``.jsonl`` from one of our output or error lines."""
    custom_id = line["custom_id"]
    if line.get("response") is not None:
        result: dict[str, Any] = {
            "custom_id": custom_id,
            "result": {"type": "succeeded", "message": line["response"]["body"]},
        }
        if "x_billing" in line:
            result["x_billing"] = line["x_billing"]
        return result
    code, message = line["error"]["code"], line["error"]["message"]
    if code in _TYPE_BY_CODE:
        return {"custom_id": custom_id, "result": {"type": _TYPE_BY_CODE[code]}}
    error_type = "invalid_request_error" if code in _REQUEST_CODES else "api_error"
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def _unrecorded_result(custom_id: str, status: BatchStatus) -> dict[str, Any]:
    kind = unrecorded_type(status)
    if kind != "errored":
        return {"custom_id": custom_id, "result": {"type": kind}}
    error = {"type": "error", "error": {"type": "api_error", "message": "The request was not processed."}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def _lines(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    for item in iter_jsonl(chunks):
        if isinstance(item, JsonlLine) and item.value is not None:
            yield item.value


def iter_results_jsonl(storage: FileStorage, sources: ResultSources) -> Iterator[bytes]:
    """The results file, a line at a time (UTF-8, newline-terminated); reads storage only.

    Every file is opened before the first line, so a missing one raises NotFoundError before a
    response starts."""
    results = [
        open_file_content(storage, f) for f in (sources.output_file, sources.error_file) if f is not None
    ]
    requests = None if sources.input_file is None else open_file_content(storage, sources.input_file)
    return _results(results, requests, sources.status)


def _results(
    results: list[Iterator[bytes]], requests: Iterator[bytes] | None, status: BatchStatus
) -> Iterator[bytes]:
    seen: set[str] = set()
    for chunks in results:
        for line in _lines(chunks):
            seen.add(line["custom_id"])
            yield (json.dumps(individual_result(line), ensure_ascii=False) + "\n").encode()
    if requests is not None:
        for request in _lines(requests):
            if request["custom_id"] not in seen:
                yield (json.dumps(_unrecorded_result(request["custom_id"], status)) + "\n").encode()

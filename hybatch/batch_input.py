"""Validation of a batch input file, run by the worker before any request is generated.

The file is read as a stream of chunks. Every problem in the file is reported (not just the
first) as ``{code, line, message, param}`` exactly as OpenAI's ``batch.errors.data``. A file
starting with a UTF-8 byte order mark is rejected (``invalid_file_format``), as OpenAI does;
its lines are still checked so the report is complete. Blank lines are skipped. A
``/v1/embeddings`` batch holds at most ``MAX_EMBEDDING_INPUTS`` inputs over all its requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hybatch.embeddings_body import EmbeddingRequest, check_embeddings_body
from hybatch.jsonl import JsonlProblem, iter_jsonl
from hybatch.message_params import check_message_params
from hybatch.models import MAX_CUSTOM_ID_CHARS, BatchEndpoint
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.request_body import FieldProblem, GenerationRequest, check_body
from hybatch.responses_body import check_responses_body

_LINE_KEYS = ("custom_id", "method", "url", "body")
MAX_EMBEDDING_INPUTS = 50_000  # OpenAI's cap on embedding inputs across all requests of a batch


@dataclass(frozen=True)
class BatchInputError:
    """One problem, shaped like an entry of OpenAI's ``batch.errors.data``."""

    code: str
    line: int | None
    message: str
    param: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


@dataclass(frozen=True)
class BatchRequest:
    """A valid input line: who asked (``custom_id``), where it was, and what the engine runs:
    text to generate (every endpoint but embeddings) or inputs to embed."""

    line_number: int
    custom_id: str
    body: dict[str, Any]
    generation: GenerationRequest | EmbeddingRequest


@dataclass(frozen=True)
class BatchInput:
    """Either the requests to run (``errors`` empty) or the reasons the batch must fail."""

    requests: list[BatchRequest]
    errors: list[BatchInputError]

    @property
    def is_valid(self) -> bool:
        return not self.errors


def validate_batch_input(
    chunks: Iterable[bytes],
    *,
    endpoint: BatchEndpoint,
    served_model: str,
    tokenizer: PromptTokenizer,
    max_requests: int,
) -> BatchInput:
    """Parse and check a whole input file; see the module docstring for the rules."""
    requests: list[BatchRequest] = []
    errors: list[BatchInputError] = []
    first_line_of: dict[str, int] = {}
    num_lines = 0
    num_embedding_inputs = 0
    for item in iter_jsonl(chunks):
        if isinstance(item, JsonlProblem):
            errors.append(BatchInputError(item.code, item.line, item.message, None))
            continue
        num_lines += 1
        if num_lines == max_requests + 1:
            errors.append(
                BatchInputError(
                    "too_many_requests",
                    item.line_number,
                    f"The input has more than {max_requests} requests.",
                    None,
                )
            )
        if item.problem is not None:
            problem = item.problem
            errors.append(BatchInputError(problem.code, problem.line, problem.message, None))
            continue
        line_number, line = item.line_number, item.value or {}
        line_errors = _check_envelope(line, line_number, endpoint, first_line_of)
        body = line.get("body")
        generation = None
        if isinstance(body, dict):
            generation, problems = _check_line_body(body, endpoint, served_model, tokenizer)
            line_errors += [BatchInputError(p.code, line_number, p.message, p.param) for p in problems]
        if isinstance(generation, EmbeddingRequest):
            before = num_embedding_inputs
            num_embedding_inputs += len(generation.inputs)
            if before <= MAX_EMBEDDING_INPUTS < num_embedding_inputs:
                errors.append(
                    BatchInputError(
                        "too_many_embedding_inputs",
                        line_number,
                        f"The batch has more than {MAX_EMBEDDING_INPUTS} embedding inputs "
                        "(counted over every request's input).",
                        "body.input",
                    )
                )
        errors += line_errors
        if not line_errors and generation is not None:
            requests.append(BatchRequest(line_number, line["custom_id"], body, generation))
    return BatchInput(requests=requests if not errors else [], errors=errors)


def _check_line_body(
    body: dict[str, Any], endpoint: BatchEndpoint, served_model: str, tokenizer: PromptTokenizer
) -> tuple[GenerationRequest | EmbeddingRequest | None, list[FieldProblem]]:
    if endpoint is BatchEndpoint.RESPONSES:
        return check_responses_body(body, served_model, tokenizer)
    if endpoint is BatchEndpoint.EMBEDDINGS:
        return check_embeddings_body(body, served_model, tokenizer)
    if endpoint is BatchEndpoint.MESSAGES:
        return check_message_params(body, served_model, tokenizer)
    return check_body(body, endpoint, served_model, tokenizer)


def _check_envelope(
    line: dict[str, Any], line_number: int, endpoint: BatchEndpoint, first_line_of: dict[str, int]
) -> list[BatchInputError]:
    errors: list[BatchInputError] = []

    def report(code: str, param: str, message: str) -> None:
        errors.append(BatchInputError(code, line_number, message, param))

    for key in _LINE_KEYS:
        if key not in line:
            report("missing_required_parameter", key, f"Missing required parameter: '{key}'.")
    for key in line.keys() - set(_LINE_KEYS):
        report("unknown_parameter", key, f"Unrecognized parameter '{key}' on the request line.")

    custom_id = line.get("custom_id")
    if "custom_id" in line:
        if not isinstance(custom_id, str) or not custom_id:
            report("invalid_type", "custom_id", "'custom_id' must be a non-empty string.")
        elif len(custom_id) > MAX_CUSTOM_ID_CHARS:
            report(
                "invalid_value", "custom_id", f"'custom_id' is longer than {MAX_CUSTOM_ID_CHARS} characters."
            )
        elif custom_id in first_line_of:
            report(
                "duplicate_custom_id",
                "custom_id",
                f"The custom_id {custom_id!r} is already used on line {first_line_of[custom_id]}.",
            )
        else:
            first_line_of[custom_id] = line_number

    if "method" in line and line["method"] != "POST":
        report("invalid_method", "method", "The method must be 'POST'.")
    if "url" in line and line["url"] != endpoint.value:
        report("invalid_url", "url", f"The url must be the batch's endpoint, {endpoint.value!r}.")
    if "body" in line and not isinstance(line["body"], dict):
        report("invalid_type", "body", "'body' must be a JSON object.")
    return errors

"""OpenAI-shaped errors: every failure answers ``{"error": {message, type, param, code}}``.

Request validation failures answer 400 like OpenAI (not FastAPI's 422 ``detail`` list). An
unknown URL answers 404 "Invalid URL" like OpenAI, except OpenAI's direct inference endpoints
(``POST /v1/chat/completions`` ...): their 404 says that this service runs them only as batches.
Under ``/dashboard`` a browser is asking, so the same error is rendered as a page instead, by
the renderer the dashboard registers (``app.state.render_page_error``). Under ``/v1/messages``
the Anthropic SDK is asking: the error takes Anthropic's shape (``api.anthropic_errors``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from api.anthropic_errors import anthropic_error_response, is_anthropic_path
from hybatch.errors import (
    AuthenticationError,
    ConflictError,
    HybatchError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from hybatch.models import BatchEndpoint

log = logging.getLogger(__name__)

PAGE_PATH_PREFIX = "/dashboard"

# OpenAI answers these directly; here they are only the ``url`` of a batch's request lines.
DIRECT_INFERENCE_PATHS = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", *BatchEndpoint}
)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

_STATUS_BY_ERROR: dict[type[HybatchError], int] = {
    InvalidRequestError: 400,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    ServiceUnavailableError: 503,
}


def error_response(
    status_code: int,
    message: str,
    *,
    error_type: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _respond(
    request: Request,
    status_code: int,
    message: str,
    *,
    error_type: str = INVALID_REQUEST,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    render_page = getattr(request.app.state, "render_page_error", None)
    if render_page is not None and request.url.path.startswith(PAGE_PATH_PREFIX):
        return render_page(request, status_code, message)
    if is_anthropic_path(request.url.path):
        return anthropic_error_response(request.url.path, status_code, message, headers=headers)
    return error_response(
        status_code, message, error_type=error_type, param=param, code=code, headers=headers
    )


def _hybatch_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HybatchError)
    status_code = next((status for kind, status in _STATUS_BY_ERROR.items() if isinstance(error, kind)), 400)
    error_type = SERVER_ERROR if status_code >= 500 else INVALID_REQUEST
    return _respond(
        request, status_code, error.message, error_type=error_type, param=error.param, code=error.code
    )


def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = _not_found_message(request)
    else:
        message = str(error.detail)
    error_type = SERVER_ERROR if error.status_code >= 500 else INVALID_REQUEST
    code = "request_too_large" if error.status_code == 413 else None
    return _respond(
        request, error.status_code, message, error_type=error_type, code=code, headers=error.headers
    )


def _not_found_message(request: Request) -> str:
    path = request.url.path.rstrip("/")
    if path not in DIRECT_INFERENCE_PATHS:
        return f"Invalid URL ({request.method} {request.url.path})"
    return (
        f"This service runs batches only: {request.method} {path} is not served directly. Upload the "
        'requests as a JSONL file with POST /v1/files (purpose "batch"), then create a batch with '
        f"POST /v1/batches; batch endpoints served: {', '.join(BatchEndpoint)}."
    )


def _param_name(location: tuple[object, ...]) -> str | None:
    # ("body", "metadata", "team") -> "metadata.team"; ("query", "limit") -> "limit"
    names = [str(part) for part in location[1:]] if location else []
    return ".".join(names) or None


def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    param = _param_name(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "missing":
        return _respond(
            request,
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if kind == "extra_forbidden":
        return _respond(
            request,
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if kind == "json_invalid":
        return _respond(request, 400, "We could not parse the JSON body of your request.")
    return _respond(
        request,
        400,
        f"Invalid value for '{param}': {first.get('msg', 'invalid')}.",
        param=param,
        code="invalid_value",
    )


def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return _respond(request, 500, "The server had an error processing your request.", error_type=SERVER_ERROR)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` OpenAI-shaped."""
    app.add_exception_handler(HybatchError, _hybatch_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)

"""Anthropic-shaped errors for the routes under ``/v1/messages``: ``{"type": "error", "error": {type, message}}``.

``api.errors`` renders every failure; for a path under ``ANTHROPIC_PATH_PREFIX`` it hands the
status and message here, so the ``anthropic`` SDK raises its own exception classes
(``BadRequestError``, ``NotFoundError``, ...) while the OpenAI routes keep OpenAI's shape.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.openapi import ERROR_DESCRIPTIONS

ANTHROPIC_PATH_PREFIX = "/v1/messages"
DIRECT_MESSAGES_PATH = "/v1/messages"

# Anthropic's error types by HTTP status; any other 4xx is an invalid request, any 5xx an api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PATH_PREFIX or path.startswith(ANTHROPIC_PATH_PREFIX + "/")


def anthropic_error_response(
    path: str, status_code: int, message: str, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error body Anthropic's API answers with; ``path`` only words an unknown URL's message."""
    default = "api_error" if status_code >= 500 else "invalid_request_error"
    error_type = ERROR_TYPES.get(status_code, default)
    if status_code == 404 and path.rstrip("/") == DIRECT_MESSAGES_PATH:
        message = (
            "This service runs Message Batches only: POST /v1/messages is not served directly. "
            "Send the requests to POST /v1/messages/batches."
        )
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return JSONResponse(body, status_code=status_code, headers=headers)


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    """``{"type": "error", "error": {type, message}}``, as Anthropic answers every failure."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


def anthropic_error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for these error statuses, each with Anthropic's error model."""
    return {
        code: {"model": AnthropicErrorResponse, "description": ERROR_DESCRIPTIONS[code]}
        for code in status_codes
    }

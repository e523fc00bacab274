"""The OpenAPI document says what each ``/v1`` route really answers: its success and its errors.

Routes declare their error statuses with ``error_responses(...)``, every one with OpenAI's error
body. FastAPI would add a 422 to every route that takes parameters; this service answers
validation failures with 400 (see ``api.errors``), so ``install_openapi`` takes the 422s and their
schemas out of the document. ``tests/api/test_openapi_contract.py`` checks the result with
schemathesis: no server errors and no status the document does not list.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

ERROR_DESCRIPTIONS = {
    400: "Invalid request: a missing or malformed parameter, body or file (OpenAI error shape)",
    401: "No API key, or an unknown or revoked one",
    404: "No such object, or one of another account",
    409: "The object is in a state that does not allow this",
    413: "The request body or the file is larger than the limit",
    503: "A service this request needs is unavailable (the broker, Stripe); try again",
}
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """``{"error": {message, type, param, code}}``, as OpenAI answers every failure."""

    error: ErrorDetail


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for these error statuses, each with the OpenAI error model."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in status_codes}


def binary_response(description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body is raw bytes (a file's content), not JSON."""
    content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {200: {"description": description, "content": content}}


def install_openapi(app: FastAPI) -> None:
    """Serve ``app``'s document without FastAPI's 422 responses (this service answers 400)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in _VALIDATION_SCHEMAS:
                schemas.pop(name, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

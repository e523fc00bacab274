"""Refuse request bodies over a byte limit with a 413, before they are spooled.

The 413 is OpenAI-shaped, or Anthropic-shaped under ``/v1/messages`` (``api.anthropic_errors``).

A declared ``Content-Length`` over the limit is answered at once; a body that turns out larger
(chunked transfer, lying header) is cut off while it is being read.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.anthropic_errors import anthropic_error_response, is_anthropic_path
from api.errors import error_response

TOO_LARGE_MESSAGE = "The request body is too large."


class BodySizeLimit:
    """ASGI middleware: at most ``max_body_bytes`` of request body per HTTP request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            path = scope.get("path", "")
            if is_anthropic_path(path):
                response = anthropic_error_response(path, 413, TOO_LARGE_MESSAGE)
            else:
                response = error_response(413, TOO_LARGE_MESSAGE, code="request_too_large")
            await response(scope, receive, send)
            return
        received_bytes = 0

        async def limited_receive() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_body_bytes:
                    # An HTTPException passes through FastAPI's body parsing to our 413 handler.
                    raise HTTPException(status_code=413, detail=TOO_LARGE_MESSAGE)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

"""Errors the service functions raise; the API turns each into an OpenAI-shaped error body.

Each carries the OpenAI ``code`` and ``param`` so the HTTP layer only chooses a status code.
"""

from __future__ import annotations


class HybatchError(Exception):
    """Base class: ``message`` for people, ``code`` and ``param`` for programs."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class InvalidRequestError(HybatchError):
    """The request is malformed or refers to something unusable (HTTP 400)."""


class AuthenticationError(HybatchError):
    """Missing, unknown or revoked API key (HTTP 401)."""


class PermissionDeniedError(HybatchError):
    """Authenticated, but not allowed to do this (HTTP 403): a failed CSRF check, say."""


class NotFoundError(HybatchError):
    """The object does not exist for this account (HTTP 404); never reveals other accounts."""


class ConflictError(HybatchError):
    """The object exists but its state forbids the operation (HTTP 409)."""


class PayloadTooLargeError(HybatchError):
    """An upload exceeds the configured size limit (HTTP 413)."""


class ServiceUnavailableError(HybatchError):
    """A backing service (the broker) could not take the work (HTTP 503)."""

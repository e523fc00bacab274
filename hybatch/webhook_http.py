"""One webhook delivery attempt over HTTP: a POST to a vetted address, no redirects, a timeout.

``post`` never follows a redirect: a 3xx answer is a failed attempt (as Standard Webhooks senders
do), since following one would send the request, headers and all, to a URL nobody checked (a
``302`` to ``169.254.169.254`` would otherwise reach the cloud metadata service). Given the
``addresses`` its host was vetted at (``hybatch.webhooks.public_addresses``), it connects to one
of them instead of resolving the host again, so DNS that changes between the check and the
connection (rebinding) cannot point it elsewhere; the ``Host`` header and TLS (SNI and the
certificate check) still use the URL's host. The timeout bounds the connection and each read.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt got: an HTTP status, or an error without one."""

    status_code: int | None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _connect_any(addresses: Sequence[str], port: int, timeout_s: float | None) -> socket.socket:
    """A socket connected to the first of ``addresses`` that answers on ``port``."""
    last_error: OSError = OSError("no address to connect to")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout_s)
        except OSError as error:
            last_error = error
    raise last_error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one of ``addresses``, never to what ``host`` resolves to now."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses = tuple(addresses)

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to one of ``addresses``; SNI and the certificate check use ``host``."""

    def __init__(self, host: str, port: int, *, addresses: Sequence[str], timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._addresses = tuple(addresses)

    def connect(self) -> None:
        sock = _connect_any(self._addresses, self.port, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def _connection(url: str, addresses: Sequence[str] | None, timeout_s: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    is_https = parts.scheme == "https"
    # Always a port: given none, http.client reads the last group of an IPv6 host ("2001:db8::1")
    # as one.
    port = parts.port or (http.client.HTTPS_PORT if is_https else http.client.HTTP_PORT)
    if addresses is None:  # the operator allows any address: the host is resolved as usual
        if is_https:
            return http.client.HTTPSConnection(
                parts.hostname, port, timeout=timeout_s, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(parts.hostname, port, timeout=timeout_s)
    pinned = _PinnedHTTPSConnection if is_https else _PinnedHTTPConnection
    return pinned(parts.hostname, port, addresses=addresses, timeout=timeout_s)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    addresses: Sequence[str] | None = None,
) -> Attempt:
    """POST ``body`` to ``url`` (connecting to one of ``addresses`` when given); never raises: an
    unreachable endpoint, a timeout or a redirect is an ``Attempt`` too."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection = _connection(url, addresses, timeout_s)
    except ValueError as error:  # a port that is not a number
        return Attempt(None, f"{type(error).__name__}: {error}")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        location = response.getheader("location")
    except (OSError, http.client.HTTPException, ValueError) as error:  # ValueError: a host that is no name
        return Attempt(None, f"{type(error).__name__}: {error}")
    finally:
        connection.close()
    if 300 <= status < 400:
        return Attempt(status, f"HTTP {status}: redirects are not followed (location: {location})")
    if not 200 <= status < 300:
        return Attempt(status, f"HTTP {status}")
    return Attempt(status)

"""One webhook attempt over HTTP: redirects are not followed, the vetted address is the one connected
to, and an endpoint that never answers costs one timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hybatch.webhook_http import post


class _Recorder(BaseHTTPRequestHandler):
    """Records (method, path, Host header) of every request; a POST to /moved is redirected to
    /elsewhere, everything else answers 200."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers["host"]))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("location", f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere")
        else:
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(recorder: ThreadingHTTPServer) -> None:
    port = recorder.server_address[1]
    attempt = post(f"http://127.0.0.1:{port}/moved", b"{}", {"content-type": "application/json"}, 5.0)
    assert not attempt.succeeded and attempt.status_code == 302
    assert "redirects are not followed" in attempt.error and "/elsewhere" in attempt.error
    assert [(method, path) for method, path, _host in recorder.seen] == [("POST", "/moved")]


def test_the_attempt_connects_to_the_vetted_address_not_to_a_new_lookup(
    recorder: ThreadingHTTPServer,
) -> None:
    port = recorder.server_address[1]
    # ".invalid" never resolves: only the pinned address can reach the server.
    url = f"http://hooks.invalid:{port}/hook?x=1"
    assert post(url, b"{}", {}, 5.0, ("127.0.0.1",)).succeeded
    assert recorder.seen == [("POST", "/hook?x=1", f"hooks.invalid:{port}")]  # Host is the URL's
    unpinned = post(url, b"{}", {}, 5.0)
    assert not unpinned.succeeded and unpinned.status_code is None and unpinned.error


def test_an_endpoint_that_never_answers_costs_one_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # connections are queued by the kernel and never answered
    try:
        started = time.monotonic()
        attempt = post(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", b"{}", {}, 0.3)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert not attempt.succeeded and attempt.status_code is None and "timed out" in attempt.error
    assert elapsed < 5


def test_non_2xx_and_unreachable_are_failed_attempts(recorder: ThreadingHTTPServer) -> None:
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there now
    refused = post(f"http://127.0.0.1:{port}/hook", b"{}", {}, 2.0)
    assert not refused.succeeded and refused.status_code is None and "ConnectionRefused" in refused.error
    bad_port = post("http://127.0.0.1:notaport/hook", b"{}", {}, 2.0)
    assert not bad_port.succeeded and bad_port.status_code is None

"""One webhook attempt over HTTP(S): redirects are not followed, the vetted address is the one connected
to (TLS still checks the URL's host), and an endpoint that never answers costs one timeout."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
    no_name = post("http://ex..com/hook", b"{}", {}, 2.0)  # stored where private URLs are allowed
    assert not no_name.succeeded and no_name.status_code is None and no_name.error


def _certificate_files(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate and key for ``host`` signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def build(subject: str, issuer: str, public_key, signing_key, *, is_ca: bool, names=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, host_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test CA", "test CA", ca_key.public_key(), ca_key, is_ca=True)
    leaf = build(host, "test CA", host_key.public_key(), ca_key, is_ca=False, names=[host])
    paths = directory / "ca.pem", directory / "host.pem", directory / "host.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        host_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_https_to_the_vetted_address_checks_the_certificate_of_the_urls_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file, cert_file, key_file = _certificate_files(tmp_path, "hooks.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the client trusts the test CA, and only it
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen, server_names = [], []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    tls.sni_callback = lambda _socket, name, _context: server_names.append(name)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        attempt = post(f"https://hooks.example:{port}/hook", b"{}", {}, 5.0, ("127.0.0.1",))
        assert attempt.succeeded, attempt.error
        assert server_names == ["hooks.example"]  # SNI names the URL's host, not the address
        assert server.seen == [("POST", "/hook", f"hooks.example:{port}")]
        # The same server reached as another host: its certificate does not match, nothing is sent.
        other = post(f"https://other.example:{port}/hook", b"{}", {}, 5.0, ("127.0.0.1",))
        assert (
            not other.succeeded and other.status_code is None and "CERTIFICATE_VERIFY_FAILED" in other.error
        )
        assert len(server.seen) == 1
    finally:
        server.shutdown()


@pytest.mark.parametrize("pinned", [True, False])
def test_an_ipv6_host_without_a_port_goes_to_that_address_on_the_schemes_port(
    pinned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    connected = []

    def create_connection(address, *_args, **_kwargs):
        connected.append(address[:2])
        raise ConnectionRefusedError("not here")

    monkeypatch.setattr(socket, "create_connection", create_connection)
    addresses = ("2001:db8::1",) if pinned else None
    for url, port in (("http://[2001:db8::1]/hook", 80), ("https://[2001:db8::1]/hook", 443)):
        attempt = post(url, b"{}", {}, 1.0, addresses)
        assert not attempt.succeeded and "not here" in attempt.error
        assert connected.pop() == ("2001:db8::1", port)

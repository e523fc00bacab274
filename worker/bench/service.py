"""A fresh embedded hybatch service for benchmarks: ``hybatch up`` as a user starts it, always stopped.

The service runs on a new temporary data dir (SQLite database, SQLite broker, files, disk cache) and a
free port, in its own process group, so stopping it also ends the worker it started.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
OUTPUT_LINES_KEPT = 2000
# Settings that would point the service away from its fresh data dir, or at another service.
_REPLACED_SETTINGS = {
    f"HYBATCH_{name}"
    for name in ("DATA_DIR", "DATABASE_URL", "BROKER_URL", "FILES_DIR", "DISK_CACHE_DIR", "HOST", "PORT")
}
_API_KEY = re.compile(r"\bhb-\S+")
# Celery's log line once the worker consumes. Waiting for it keeps the first enqueue from racing the
# worker's first connection to the SQLite broker (seen once: 503 enqueue_failed on the first batch).
_WORKER_READY = re.compile(r"celery@\S+ ready\.")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """``python -m hybatch <args>`` with ``env`` in its own process group (children such as the worker
    join it, so ``stop`` and ``kill`` end them all); keeps its last output lines and, when it prints
    one (``up`` on a fresh data dir), its API key."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hybatch", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)
        self.api_key: str | None = None
        self.worker_ready = False
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            printed = _API_KEY.search(line)
            if printed and self.api_key is None:
                self.api_key = printed.group(0)
            self.worker_ready = self.worker_ready or _WORKER_READY.search(line) is not None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def check_running(self) -> None:
        if not self.is_running():
            raise RuntimeError(f"`hybatch {' '.join(self.args)}` exited with code {self.process.returncode}")

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash: nothing gets to clean up)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM the group (the API stops, the worker requeues any batch), then SIGKILL what remains."""
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)


def api_is_healthy(base_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@dataclass(frozen=True)
class RunningService:
    base_url: str  # http://127.0.0.1:PORT
    api_key: str
    process: ServiceProcess


@contextlib.contextmanager
def embedded_service(settings: dict[str, str], extra_env: dict[str, str]) -> Iterator[RunningService]:
    """Starts ``hybatch up`` with ``HYBATCH_<name>`` = ``settings[name]`` on a fresh data dir and port.

    Waits until ``/healthz`` answers, the printed API key is read and the worker is ready; stops the
    service on exit, whatever happened.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hybatch-bench-e2e-") as data_dir:
        env = {name: value for name, value in os.environ.items() if name not in _REPLACED_SETTINGS}
        env |= {f"HYBATCH_{name}": value for name, value in settings.items()}
        env |= {"HYBATCH_DATA_DIR": data_dir, "HYBATCH_PORT": str(port), **extra_env}
        service = ServiceProcess(["up"], env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not (service.worker_ready and service.api_key and api_is_healthy(base_url)):
                service.check_running()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no ready API, key and worker after {STARTUP_TIMEOUT_S} s")
                time.sleep(0.2)
            yield RunningService(base_url, service.api_key, service)
        except Exception:
            print(f"last output of `hybatch up`:\n{service.output}", file=sys.stderr)
            raise
        finally:
            service.stop()

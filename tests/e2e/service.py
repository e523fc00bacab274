"""Running hybatch as real processes for end-to-end tests, and driving it with the openai SDK.

Every process is started in its own process group and is always stopped (terminate, then kill
the whole group), so a failing test leaves no API or worker behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
STOP_TIMEOUT_S = 15


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """``python -m hybatch <args>`` with ``env``; its output is kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hybatch", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: children (the worker) go with it
        )
        self._lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash: nothing gets to clean up)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited in time."""
        group = self.process.pid  # start_new_session: the group id is the leader's pid
        if self.is_running():
            os.killpg(group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # whatever is left of the group (e.g. the worker)
        self.process.wait(timeout=STOP_TIMEOUT_S)


def wait_until(condition, *, timeout_s: float, processes: list[ServiceProcess], what: str) -> None:
    """Poll ``condition()`` until true; fail early with the output of any process that died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if not process.is_running():
                raise AssertionError(
                    f"hybatch {process.args} exited while waiting for {what}:\n{process.output}"
                )
        try:
            if condition():
                return
        except Exception as error:  # e.g. an HTTP 500: show what the services logged
            raise AssertionError(f"{error!r} while waiting for {what}\n{_logs(processes)}") from error
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{_logs(processes)}")


def _logs(processes: list[ServiceProcess]) -> str:
    return "\n".join(f"--- hybatch {p.args}:\n{p.output}" for p in processes)


def api_is_healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def chat_requests(model: str, count: int, *, max_tokens: int = 4) -> list[dict]:
    system = "You are a counting assistant. Count slowly and carefully, one number per word."
    return [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "max_tokens": max_tokens,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Count to {i}."},
                ],
            },
        }
        for i in range(count)
    ]


def run_batch_with_sdk(client, lines: list[dict], *, processes: list[ServiceProcess], timeout_s: float):
    """files.create -> batches.create -> poll batches.retrieve -> files.content; returns (batch, lines)."""
    upload = client.files.create(
        file=("requests.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    seen = {"batch": batch}

    def finished() -> bool:
        seen["batch"] = client.batches.retrieve(batch.id)
        return seen["batch"].status in TERMINAL_STATUSES

    wait_until(finished, timeout_s=timeout_s, processes=processes, what=f"batch {batch.id} to finish")
    batch = seen["batch"]
    output = client.files.content(batch.output_file_id).text if batch.output_file_id else ""
    return batch, [json.loads(line) for line in output.splitlines()]

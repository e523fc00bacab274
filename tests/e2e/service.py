"""Running hybatch as real processes for end-to-end tests, and driving it with the openai SDK.

The processes are ``worker.bench.service.ServiceProcess``: each in its own process group, always
stopped (terminate, then kill the whole group), so a failing test leaves no API or worker behind.
"""

from __future__ import annotations

import json
import time

from worker.bench.service import ServiceProcess, api_is_healthy, free_port

__all__ = ["ServiceProcess", "api_is_healthy", "free_port", "run_batch_with_sdk", "wait_until"]

TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")


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

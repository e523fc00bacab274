"""A bounded, closed-loop HTTP load client for ``hybatch bench api`` (httpx, asyncio, loopback).

``clients`` tasks, each with its own keep-alive connection, send their next request as soon as
the last one is answered, for ``duration_s``. The mix, taken in turn by every
client (client ``i`` starts at ``i % 3``): list files (``GET /v1/files?limit=20``), get one file
(``GET /v1/files/{id}``, of those seeded before the run) and upload a 1 KB JSONL file. An error is
any answer but 200, or no answer within ``timeout_s``; latencies are those of the 200s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

OPERATIONS = ("list", "get", "upload")
UPLOAD_BYTES = 1024
LIST_LIMIT = 20
GOAL_P99_CLIENTS = 100  # docs/performance.md: 0 errors at 100 and 1,000 clients, p99 < 1 s at 100


@dataclass(frozen=True)
class LevelResult:
    """One concurrency level: successes with their latencies (seconds, sorted), errors by kind."""

    clients: int
    elapsed_s: float
    latencies_s: tuple[float, ...]
    errors: dict[str, int]

    @property
    def num_ok(self) -> int:
        return len(self.latencies_s)

    @property
    def num_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def requests_per_s(self) -> float:
        return self.num_ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def p50_s(self) -> float | None:
        return percentile(self.latencies_s, 0.50)

    @property
    def p99_s(self) -> float | None:
        return percentile(self.latencies_s, 0.99)


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ascending ``sorted_values`` (0 < fraction <= 1); None when empty."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if not sorted_values:
        return None
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[rank - 1]


def upload_body(size_bytes: int = UPLOAD_BYTES) -> bytes:
    """One chat request line padded to exactly ``size_bytes`` (newline included)."""
    line = {
        "custom_id": "bench",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": ""}]},
    }
    padding = size_bytes - len(json.dumps(line)) - 1
    if padding < 0:
        raise ValueError(f"an upload line needs at least {size_bytes - padding} bytes")
    line["body"]["messages"][0]["content"] = "x" * padding
    return (json.dumps(line) + "\n").encode()


async def run_level(
    base_url: str, secret: str, file_ids: Sequence[str], clients: int, duration_s: float, timeout_s: float
) -> LevelResult:
    """Drive ``clients`` concurrent clients for ``duration_s`` seconds; see the module docstring."""
    if not file_ids:
        raise ValueError("run_level needs at least one seeded file id to get")
    headers = {"Authorization": f"Bearer {secret}"}
    body = upload_body()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    # One single-connection client per task: httpx's pool scans its connections on every request,
    # so one pool of 1,000 connections would make this client, not the API, what is measured.
    one_connection = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # never used on http://, but made per client unless shared

    async def one(http: httpx.AsyncClient, operation: str, number: int) -> httpx.Response:
        if operation == "list":
            return await http.get("/v1/files", params={"limit": LIST_LIMIT})
        if operation == "get":
            return await http.get(f"/v1/files/{file_ids[number % len(file_ids)]}")
        return await http.post("/v1/files", files={"file": ("bench.jsonl", body)}, data={"purpose": "batch"})

    async def client(index: int, deadline: float) -> None:
        async with httpx.AsyncClient(
            base_url=base_url, headers=headers, limits=one_connection, timeout=timeout_s, verify=tls
        ) as http:
            for number in itertools.count(index):
                if time.perf_counter() >= deadline:
                    return
                operation = OPERATIONS[number % len(OPERATIONS)]
                started = time.perf_counter()
                try:
                    response = await one(http, operation, number)
                except httpx.TimeoutException:
                    kind = f"{operation}: timeout"
                except httpx.HTTPError as error:
                    kind = f"{operation}: {type(error).__name__}"
                else:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                        continue
                    kind = f"{operation}: HTTP {response.status_code}"
                errors[kind] = errors.get(kind, 0) + 1

    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(*(client(index, deadline) for index in range(clients)))
    elapsed_s = time.perf_counter() - started
    return LevelResult(clients, elapsed_s, tuple(sorted(latencies)), errors)


def report(results: Sequence[LevelResult], p99_goal_s: float | None = None) -> list[str]:
    """The table ``hybatch bench api`` prints: a row per level, req/s as a ratio of the first level's."""
    if not results:
        return []
    baseline = results[0]
    lines = [
        f"{'clients':>8} {'requests':>9} {'req/s':>8} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {f'req/s vs {baseline.clients}':>14}"
    ]
    for result in results:
        ratio = result.requests_per_s / baseline.requests_per_s if baseline.requests_per_s else math.nan
        lines.append(
            f"{result.clients:>8} {result.num_ok:>9} {result.requests_per_s:>8.1f} {result.num_errors:>7}"
            f" {_ms(result.p50_s):>8} {_ms(result.p99_s):>8} {ratio:>13.2f}x"
        )
    for result in results:
        for kind, count in sorted(result.errors.items()):
            lines.append(f"  {result.clients} clients: {count} x {kind}")
    if p99_goal_s is not None:
        met = all(result.num_errors == 0 for result in results) and all(
            result.p99_s is not None and result.p99_s < p99_goal_s
            for result in results
            if result.clients == GOAL_P99_CLIENTS
        )
        lines.append(
            f"goal (0 errors at every level, p99 < {p99_goal_s * 1000:.0f} ms at {GOAL_P99_CLIENTS} clients): "
            + ("met" if met else "NOT met")
        )
    return lines


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"

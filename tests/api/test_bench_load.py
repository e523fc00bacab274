"""``hybatch bench api``'s pure parts (percentiles, the upload body, the report) and one short run."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.bench_load import _client_levels
from api.load_client import LevelResult, percentile, report, run_level, upload_body
from hybatch.jsonl import JsonlLine, iter_jsonl
from hybatch.settings import Settings
from tests.api.helpers import Headers, upload


def test_percentile_is_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]  # 1 .. 100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0], 0.5) == 1.0
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_percentile_refuses_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], fraction)


def test_the_upload_is_one_valid_jsonl_line_of_exactly_1_kb() -> None:
    body = upload_body()
    assert len(body) == 1024
    (item,) = iter_jsonl([body])
    assert isinstance(item, JsonlLine) and item.problem is None


def _result(clients: int, num_ok: int, latency_s: float, errors: dict[str, int] | None = None) -> LevelResult:
    return LevelResult(clients, elapsed_s=10.0, latencies_s=(latency_s,) * num_ok, errors=errors or {})


def test_report_gives_req_s_as_a_ratio_of_the_first_level() -> None:
    lines = report([_result(10, 1000, 0.02), _result(100, 2500, 0.4), _result(1000, 500, 2.0)], 1.0)
    header, *rows, goal = lines
    assert "req/s vs 10" in header
    assert rows[0].split() == ["10", "1000", "100.0", "0", "20", "20", "1.00x"]
    assert rows[1].split() == ["100", "2500", "250.0", "0", "400", "400", "2.50x"]
    assert rows[2].split()[-1] == "0.50x"
    assert goal.endswith(": met")


def test_report_lists_errors_and_a_missed_goal() -> None:
    slow = _result(100, 10, 1.5)
    failing = _result(1000, 10, 0.1, errors={"upload: timeout": 3, "list: HTTP 500": 1})
    lines = report([_result(10, 10, 0.1), slow, failing], 1.0)
    assert "  1000 clients: 1 x list: HTTP 500" in lines
    assert "  1000 clients: 3 x upload: timeout" in lines
    assert lines[-1].endswith("NOT met")
    assert report([_result(10, 10, 0.1), _result(100, 10, 0.5)], 1.0)[-1].endswith(": met")
    assert report([_result(10, 10, 0.1), _result(100, 10, 1.5)], 1.0)[-1].endswith("NOT met")


def test_a_level_with_no_answers_has_no_percentiles() -> None:
    row = report([_result(10, 0, 0.0, errors={"get: timeout": 10})])[1]
    assert row.split() == ["10", "0", "0.0", "10", "-", "-", "nanx"]


def test_client_levels_parse_a_comma_list() -> None:
    assert _client_levels("10,100, 1000") == [10, 100, 1000]
    for bad in ("", "0,10", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            _client_levels(bad)


@pytest.fixture
def served_url(settings: Settings) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, enqueue=lambda batch_id: None), port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_short_run_against_a_real_server_mixes_all_three_operations(
    served_url: str, client: TestClient, alice: Headers
) -> None:
    file_id = upload(client, alice, upload_body())["id"]
    secret = alice["Authorization"].removeprefix("Bearer ")
    result = asyncio.run(run_level(served_url, secret, [file_id], clients=3, duration_s=0.3, timeout_s=10))
    assert result.errors == {}
    assert result.num_ok >= 3  # each client answered at least once: a list, a get and an upload
    listed = client.get("/v1/files", headers=alice, params={"limit": 100}).json()["data"]
    assert len(listed) > 1  # the run's uploads landed

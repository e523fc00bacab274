"""Distributed mode end to end: Postgres + Redis, ``hybatch api`` and ``hybatch worker`` processes."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from openai import OpenAI

from hybatch.migrate import upgrade_to_head
from tests.e2e.checks import assert_batch_accounted
from tests.e2e.conftest import new_api_key, service_env
from tests.e2e.service import (
    ServiceProcess,
    api_is_healthy,
    chat_requests,
    free_port,
    run_batch_with_sdk,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

STARTUP_TIMEOUT_S = 60
BATCH_TIMEOUT_S = 60


def test_api_and_worker_processes_on_postgres_and_redis(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    upgrade_to_head(empty_postgres_url)
    key = new_api_key(empty_postgres_url)
    port = free_port()
    env = service_env(
        data_dir=tmp_path / "shared",  # the files directory API and worker share
        port=port,
        model=service_checkpoint,
        queue=queue,
        database_url=empty_postgres_url,
        broker_url=redis_url,
    )
    worker = ServiceProcess(["worker", "--loglevel=warning"], env)
    request.addfinalizer(worker.stop)
    api = ServiceProcess(["api"], env)
    request.addfinalizer(api.stop)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: api_is_healthy(base_url), timeout_s=STARTUP_TIMEOUT_S, processes=[api, worker], what="the API"
    )
    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    requests = chat_requests("tiny-test", 4)

    batch, lines = run_batch_with_sdk(client, requests, processes=[api, worker], timeout_s=BATCH_TIMEOUT_S)

    assert_batch_accounted(empty_postgres_url, batch, requests, lines)


def test_a_worker_stopped_with_ctrl_c_puts_its_batch_back_for_the_next_worker(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    upgrade_to_head(empty_postgres_url)
    key = new_api_key(empty_postgres_url)
    port = free_port()
    env = service_env(
        data_dir=tmp_path / "shared",
        port=port,
        model=service_checkpoint,
        queue=queue,
        database_url=empty_postgres_url,
        broker_url=redis_url,
    )
    first = ServiceProcess(["worker"], env)
    request.addfinalizer(first.stop)
    api = ServiceProcess(["api"], env)
    request.addfinalizer(api.stop)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: api_is_healthy(base_url) and first.worker_ready,
        timeout_s=STARTUP_TIMEOUT_S,
        processes=[api, first],
        what="the API and the worker",
    )
    client = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
    requests = [
        {**line, "body": {**line["body"], "max_tokens": 60 + 40 * i}}
        for i, line in enumerate(chat_requests("tiny-test", 8))
    ]
    content = "".join(json.dumps(line) + "\n" for line in requests).encode()
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1,
        timeout_s=BATCH_TIMEOUT_S,
        processes=[api, first],
        what="the first finished request",
    )

    os.killpg(first.process.pid, signal.SIGINT)  # Ctrl-C in the worker's terminal
    first.process.wait(timeout=30)
    output = first.output
    assert "Traceback" not in output, output
    assert re.search(rf"batch {batch.id} put back on the queue at \d+/8", output), output
    assert len(re.findall(r"Task worker\.run_batch\[\S+\] received", output)) == 1, output
    assert client.batches.retrieve(batch.id).status == "in_progress"

    second = ServiceProcess(["worker"], env)
    request.addfinalizer(second.stop)
    wait_until(
        lambda: client.batches.retrieve(batch.id).status == "completed",
        timeout_s=BATCH_TIMEOUT_S,
        processes=[api, second],
        what="the batch on the next worker",
    )
    batch = client.batches.retrieve(batch.id)
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert_batch_accounted(empty_postgres_url, batch, requests, lines)

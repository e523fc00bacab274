"""Embedded mode end to end: ``hybatch up`` (SQLite, SQLite broker, worker subprocess) + openai SDK."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
from decimal import Decimal
from pathlib import Path

import pytest
from openai import OpenAI

from hybatch.settings import DEFAULT_MODEL_DIR
from tests.e2e.checks import assert_batch_accounted
from tests.e2e.conftest import service_env
from tests.e2e.service import (
    ServiceProcess,
    api_is_healthy,
    chat_requests,
    free_port,
    run_batch_with_sdk,
    wait_until,
)

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 60
BATCH_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def _start_up(
    data_dir: Path, model: Path, request: pytest.FixtureRequest, *, key: str | None = None, **settings: str
) -> tuple[OpenAI, ServiceProcess]:
    """``hybatch up`` on ``data_dir``; the API key is the one it prints on first start, else ``key``."""
    port = free_port()
    env = service_env(data_dir=data_dir, port=port, model=model, queue="e2e", **settings)
    up = ServiceProcess(["up"], env)
    request.addfinalizer(up.stop)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: api_is_healthy(base_url), timeout_s=STARTUP_TIMEOUT_S, processes=[up], what="the API")
    if key is None:
        printed = re.search(r"\bhb-\S+", up.output)
        assert printed is not None, f"`hybatch up` printed no API key:\n{up.output}"
        key = printed.group(0)
    return OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0), up


def test_hybatch_up_runs_a_batch_for_the_openai_sdk(
    tmp_path: Path, service_checkpoint: Path, request: pytest.FixtureRequest
) -> None:
    client, up = _start_up(tmp_path / "var", service_checkpoint, request)
    [model] = [m.id for m in client.models.list().data]
    requests = chat_requests(model, 5)

    batch, lines = run_batch_with_sdk(client, requests, processes=[up], timeout_s=BATCH_TIMEOUT_S)

    assert_batch_accounted(f"sqlite:///{tmp_path / 'var' / 'hybatch.db'}", batch, requests, lines)
    # The requests share a system prompt: after the first, it comes from the prefix cache.
    assert batch.usage.input_tokens_details.cached_tokens > 0


def test_a_finished_batch_is_announced_to_the_accounts_webhook(
    tmp_path: Path, service_checkpoint: Path, request: pytest.FixtureRequest, webhook_receiver
) -> None:
    client, up = _start_up(tmp_path / "var", service_checkpoint, request, webhook_allow_private="true")
    hook = f"http://127.0.0.1:{webhook_receiver.server_address[1]}/hybatch"
    endpoint = client.webhooks.create(name="ci", url=hook, event_types=["batch.completed"])
    [model] = [m.id for m in client.models.list().data]

    batch, _lines = run_batch_with_sdk(
        client, chat_requests(model, 2), processes=[up], timeout_s=BATCH_TIMEOUT_S
    )

    wait_until(lambda: webhook_receiver.received, timeout_s=30, processes=[up], what="the webhook")
    [(headers, body)] = webhook_receiver.received
    event = client.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)  # the SDK verifies it
    assert (event.type, event.data.id, event.object) == ("batch.completed", batch.id, "event")


def _default_checkpoint_is_complete() -> bool:
    weights = ("model.safetensors", "model.safetensors.index.json")
    return (DEFAULT_MODEL_DIR / "config.json").is_file() and any(
        (DEFAULT_MODEL_DIR / w).is_file() for w in weights
    )


def _readme_first_batch() -> str:
    """The Python block of the README's "A first batch" paragraph, exactly as a user copies it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("**A first batch.**", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the README's first batch has no python block"
    return match.group(1)


def test_quick_start_with_the_default_checkpoint(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The README's first batch, run unchanged (but for the address and key) on the default model."""
    assert _default_checkpoint_is_complete(), "the default checkpoint ships with the repository"
    client, up = _start_up(tmp_path / "var", DEFAULT_MODEL_DIR, request, kv_cache_gb="0.25")
    [model] = [m.id for m in client.models.list().data]
    assert model == DEFAULT_MODEL_DIR.name
    source = _readme_first_batch()
    assert 'base_url="http://127.0.0.1:8000/v1", api_key="hb-..."' in source
    source = source.replace("http://127.0.0.1:8000/v1", str(client.base_url).rstrip("/"))
    source = source.replace('api_key="hb-..."', f"api_key={client.api_key!r}")
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(source, "README.md", "exec"), {})

    status, *rows = printed.getvalue().splitlines()
    assert status.startswith("completed BatchRequestCounts(completed=8, failed=0, total=8)"), status
    parsed = [re.fullmatch(r"(\S+) prompt (\d+) cached (\d+) cost (\S+) usd", row) for row in rows]
    assert all(parsed) and len(parsed) == 8, rows
    first, *later = [(int(m.group(2)), int(m.group(3)), Decimal(m.group(4))) for m in parsed if m]
    # What the README says: the first computes the shared prefix, the other seven read it from the
    # cache (all but the last partial block) and cost well under the first.
    assert first[1] == 0
    for prompt_tokens, cached_tokens, cost in later:
        assert prompt_tokens - 16 < cached_tokens < prompt_tokens
        assert cost < first[2] / 2


def _interrupt(service: ServiceProcess) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole foreground group (``up`` and its worker at once)."""
    os.killpg(service.process.pid, signal.SIGINT)
    service.process.wait(timeout=STOP_TIMEOUT_S)


def _assert_stopped_cleanly(service: ServiceProcess, batch_id: str) -> None:
    """One line says where the batch stopped; no traceback; the task was taken once, never again."""
    output = service.output
    assert service.process.returncode == 0, output
    assert "Traceback" not in output and "worker exited with code" not in output, output
    [put_back] = re.findall(rf"batch {batch_id} put back on the queue at (\d+)/(\d+)", output)
    assert 1 <= int(put_back[0]) < int(put_back[1]), output
    assert len(re.findall(r"Task worker\.run_batch\[\S+\] received", output)) == 1, output


@pytest.mark.parametrize("how", ["interrupted", "stopped", "killed"])
def test_a_service_stopped_or_killed_mid_batch_resumes_it_after_a_restart(
    tmp_path: Path, service_checkpoint: Path, request: pytest.FixtureRequest, how: str
) -> None:
    data_dir = tmp_path / "var"
    client, up = _start_up(data_dir, service_checkpoint, request)
    # Long, staggered generations, so the batch is still running when the service goes down.
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
        processes=[up],
        what="the first finished request",
    )
    if how == "interrupted":
        _interrupt(up)  # Ctrl-C: the worker stops between engine steps and puts the batch back
        _assert_stopped_cleanly(up, batch.id)
    elif how == "stopped":
        up.stop()  # SIGTERM to both, as a service manager stops it: the same, without Ctrl-C
        _assert_stopped_cleanly(up, batch.id)
    else:
        up.kill()  # SIGKILL: the embedded broker's message is lost; the next worker takes the batch back

    client, up = _start_up(data_dir, service_checkpoint, request, key=client.api_key)
    interrupted = client.batches.retrieve(batch.id)
    assert interrupted.status == "in_progress" and 1 <= interrupted.request_counts.completed < len(requests)
    wait_until(
        lambda: client.batches.retrieve(batch.id).status == "completed",
        timeout_s=BATCH_TIMEOUT_S,
        processes=[up],
        what="the resumed batch",
    )
    batch = client.batches.retrieve(batch.id)
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert_batch_accounted(f"sqlite:///{data_dir / 'hybatch.db'}", batch, requests, lines)

"""``hybatch up`` (SQLite, SQLite broker, a real worker process) runs a Message Batch for the unchanged
``anthropic`` SDK: created, polled until it ends, its results' usage equal to the ledger."""

from __future__ import annotations

import re
import time
from pathlib import Path

import anthropic
import pytest
import sqlalchemy as sa

from hybatch.db import make_engine
from hybatch.models import UsageRecord
from tests.e2e.conftest import service_env
from tests.e2e.service import ServiceProcess, api_is_healthy, free_port, wait_until

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 60
BATCH_TIMEOUT_S = 60
SYSTEM = "You are a careful assistant who counts. " * 8  # shared: later requests hit the cache


def test_hybatch_up_runs_a_message_batch_for_the_anthropic_sdk(
    tmp_path: Path, service_checkpoint: Path, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    env = service_env(data_dir=tmp_path / "var", port=port, model=service_checkpoint, queue="e2e")
    up = ServiceProcess(["up"], env)
    request.addfinalizer(up.stop)
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: api_is_healthy(base_url), timeout_s=STARTUP_TIMEOUT_S, processes=[up], what="the API")
    printed = re.search(r"\bhb-\S+", up.output)
    assert printed is not None, f"`hybatch up` printed no API key:\n{up.output}"
    client = anthropic.Anthropic(base_url=base_url, api_key=printed.group(0), max_retries=0)
    model = service_checkpoint.name
    requests = [
        {
            "custom_id": f"q{i}",
            "params": {
                "model": model,
                "max_tokens": 5,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": f"Count to {i}."}],
                "temperature": 0,
            },
        }
        for i in range(4)
    ]

    created = client.messages.batches.create(requests=requests)
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    batch = created
    while batch.processing_status != "ended":
        assert time.monotonic() < deadline, f"not ended in {BATCH_TIMEOUT_S}s: {batch}\n{up.output}"
        time.sleep(0.5)
        batch = client.messages.batches.retrieve(created.id)

    assert batch.request_counts.succeeded == 4 and batch.request_counts.errored == 0
    results = {r.custom_id: r.result for r in client.messages.batches.results(created.id)}
    assert sorted(results) == ["q0", "q1", "q2", "q3"]
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'hybatch.db'}")
    with engine.connect() as connection:
        rows = connection.execute(sa.select(UsageRecord).where(UsageRecord.batch_id == created.id)).all()
    engine.dispose()
    ledger = {row.custom_id: row for row in rows}
    assert sorted(ledger) == sorted(results)
    for custom_id, result in results.items():
        assert result.type == "succeeded"
        usage, row = result.message.usage, ledger[custom_id]
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (
            row.cache_miss_input_tokens,
            row.cache_hit_input_tokens,
            row.output_tokens,
        )
    assert sum(r.message.usage.cache_read_input_tokens for r in results.values()) > 0

    # The docs' example runs as written against this server (its address, key and model swapped in).
    example = _docs_example()
    for written, here in (
        ("http://127.0.0.1:8000", base_url),
        ("hb-...", printed.group(0)),
        ('"hybatch-tiny"', repr(model).replace("'", '"')),
    ):
        assert written in example, f"docs/api.md's example no longer has {written!r}"
        example = example.replace(written, here)
    before = {b.id for b in client.messages.batches.list()}
    exec(compile(example, "docs/api.md", "exec"), {})
    assert len({b.id for b in client.messages.batches.list()} - before) == 1


def _docs_example() -> str:
    """The Python block of docs/api.md's Anthropic Message Batches section, as a user copies it."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = docs.split("## Anthropic Message Batches", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/api.md's Anthropic section has no python block"
    return match.group(1)

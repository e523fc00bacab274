"""The unmodified ``anthropic`` SDK runs Message Batches through the real API (uvicorn on a free port)
and the real batch job (``worker.jobs`` on a tiny random checkpoint, driven in this process).

Checked: a whole batch from create to results, each result's usage against the ledger, cancel,
list paging both ways, delete, errors as the SDK's exception classes, x-api-key and Bearer.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from api.app import create_app
from hybatch.db import make_engine, make_session_factory
from hybatch.leases import Lease, new_lease_owner
from hybatch.models import Batch, BatchStatus, UsageRecord
from hybatch.prompt_tokenizer import PromptTokenizer
from hybatch.settings import Settings
from hybatch.storage import LocalFileStorage
from tests.api.helpers import SERVED_MODEL
from tests.worker.jobs.batches import InterceptedLLM
from tests.worker.jobs.service_checkpoint import shared_service_checkpoint
from tests.worker.jobs.task_queue import QueuedTasks, drive
from worker.jobs import JobContext

# The default schedule's first tier, USD per 1M tokens (billing/pricing/default_schedule.yaml).
HIT, MISS, OUTPUT = Decimal("0.07"), Decimal("0.70"), Decimal("2.10")
# Long enough to fill whole KV blocks, so later requests read it from the prefix cache.
SYSTEM = "You are a counting assistant. " * 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_service_checkpoint(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def llm(checkpoint: Path):
    from worker.engine import LLM

    return LLM(checkpoint, device="cpu", enable_prefix_caching=True, kv_cache_gb=0.02)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, checkpoint: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        model=checkpoint,
        model_name=SERVED_MODEL,
        device="cpu",
    )


@pytest.fixture
def context(settings: Settings, llm) -> Iterator[JobContext]:
    engine = make_engine(settings.database_url)
    yield JobContext(
        settings=settings,
        session_factory=make_session_factory(engine),
        storage=LocalFileStorage(settings.files_dir),
        load_llm=lambda: llm,
        lease=Lease(owner=new_lease_owner(), duration=timedelta(seconds=30)),
        send=QueuedTasks(),
        status_poll_interval_s=0.0,
    )
    engine.dispose()


@pytest.fixture
def base_url(settings: Settings, enqueued: list[str]) -> Iterator[str]:
    app = create_app(settings, enqueue=enqueued.append)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


@pytest.fixture
def api_key(new_key) -> str:
    return new_key("claude-user")


@pytest.fixture
def client(base_url: str, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


def _request(custom_id: str, text: str, **params) -> dict:
    return {
        "custom_id": custom_id,
        "params": {
            "model": SERVED_MODEL,
            "max_tokens": 6,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


def test_a_whole_batch_runs_unchanged_and_its_usage_is_the_ledger(
    client: anthropic.Anthropic, context: JobContext, settings: Settings, enqueued: list[str], api_key: str
) -> None:
    system_blocks = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    requests = [
        _request("plain", "Count to three: one two three.", temperature=0),
        _request("blocks", "hello", system=system_blocks, temperature=0, top_k=5),
        _request("same-prefix", "hello world", system=SYSTEM, temperature=0),
        _request(
            "stops", "The quick brown fox", system=SYSTEM, stop_sequences=["e", "o", "a"], temperature=0
        ),
        _request(
            "prefill",
            "Count to three:",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Count to three:"}]},
                {"role": "assistant", "content": "one two"},
            ],
            temperature=0,
        ),
    ]
    created = client.messages.batches.create(requests=requests)
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert (
        created.processing_status == "in_progress"
        and created.results_url is None
        and created.ended_at is None
    )
    assert created.request_counts.processing == 5 and created.request_counts.succeeded == 0
    assert created.expires_at - created.created_at == timedelta(hours=24)
    assert enqueued == [created.id]

    assert drive(created.id, context) is BatchStatus.COMPLETED

    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.results_url and ended.results_url.endswith(f"/v1/messages/batches/{created.id}/results")
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        0,
        5,
        0,
        0,
        0,
    )

    results = {r.custom_id: r for r in client.messages.batches.results(created.id)}
    assert set(results) == {r["custom_id"] for r in requests}
    with context.session_factory() as session:
        ledger = {
            u.custom_id: u
            for u in session.scalars(sa.select(UsageRecord).where(UsageRecord.batch_id == created.id))
        }
    tokenizer = PromptTokenizer.from_checkpoint(settings.model)
    for custom_id, result in results.items():
        assert result.result.type == "succeeded", result
        message = result.result.message
        assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
        assert message.model == SERVED_MODEL and message.content[0].type == "text"
        usage, record = message.usage, ledger[custom_id]
        # Anthropic's input_tokens excludes cache reads: it is our cache-miss input.
        assert usage.input_tokens == record.cache_miss_input_tokens
        assert usage.cache_read_input_tokens == record.cache_hit_input_tokens
        assert usage.output_tokens == record.output_tokens
        assert usage.cache_creation_input_tokens == 0
        assert 1 <= usage.output_tokens <= 6
        if message.stop_reason == "max_tokens":
            assert usage.output_tokens == 6 and message.stop_sequence is None
        elif message.stop_reason == "stop_sequence":
            assert message.stop_sequence in ("e", "o", "a")
        else:
            assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # The two requests after the first with the long system prompt read it from the cache.
    assert results["same-prefix"].result.message.usage.cache_read_input_tokens > 0
    # The prompt the engine ran: system, then the conversation, through the checkpoint's template.
    expected = tokenizer.encode_chat(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello world"}]
    )
    same_prefix = results["same-prefix"].result.message.usage
    assert same_prefix.input_tokens + same_prefix.cache_read_input_tokens == len(expected)
    # A prefill: the prompt ends with the assistant's text, the reply holds only what follows it.
    prefill_prompt = tokenizer.render_chat([{"role": "user", "content": "Count to three:"}]) + "one two"
    prefill = results["prefill"].result.message.usage
    prefill_ids = tokenizer.tokenizer.encode(prefill_prompt, add_special_tokens=False).ids
    assert prefill.input_tokens + prefill.cache_read_input_tokens == len(prefill_ids)
    # The bill: each result's x_billing prices those same token classes by the default schedule,
    # and the ledger row keeps that amount.
    raw = httpx.get(ended.results_url, headers={"x-api-key": api_key})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/x-jsonl")
    for line in raw.text.splitlines():
        result = json.loads(line)
        usage, x_billing = result["result"]["message"]["usage"], result["x_billing"]
        assert x_billing["token_classes"] == {
            "cache_hit_input": usage["cache_read_input_tokens"],
            "cache_miss_input": usage["input_tokens"],
            "output": usage["output_tokens"],
        }
        expected = (
            usage["cache_read_input_tokens"] * HIT
            + usage["input_tokens"] * MISS
            + usage["output_tokens"] * OUTPUT
        ) / Decimal(1_000_000)
        assert Decimal(x_billing["amount"]) == expected == ledger[result["custom_id"]].amount
    with context.session_factory() as session:
        batch = session.get(Batch, created.id)
        assert batch.endpoint == "/v1/messages" and batch.input_tokens == sum(
            r.prompt_tokens for r in ledger.values()
        )


def test_cancel_before_a_worker_starts_ends_every_request_canceled(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=[_request(f"r{i}", "hello") for i in range(3)])

    canceled = client.messages.batches.cancel(created.id)

    assert canceled.processing_status == "ended" and canceled.cancel_initiated_at is not None
    assert canceled.request_counts.canceled == 3 and canceled.request_counts.processing == 0
    results = list(client.messages.batches.results(created.id))
    assert sorted(r.custom_id for r in results) == ["r0", "r1", "r2"]
    assert {r.result.type for r in results} == {"canceled"}
    # Cancelling an ended batch changes nothing.
    assert client.messages.batches.cancel(created.id).request_counts.canceled == 3


def test_cancel_of_a_claimed_batch_is_canceling_until_the_worker_ends_it(
    client: anthropic.Anthropic, context: JobContext, settings: Settings, base_url: str, api_key: str
) -> None:
    created = client.messages.batches.create(requests=[_request(f"r{i}", f"Count to {i}") for i in range(4)])
    # A worker claimed it, so the cancel is the worker's to finish: ``canceling`` until it does.
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        session.execute(sa.update(Batch).where(Batch.id == created.id).values(claimed_at=sa.func.now()))
        session.commit()
    engine.dispose()

    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling" and canceling.request_counts.processing == 4
    assert canceling.results_url is None
    early = httpx.get(f"{base_url}/v1/messages/batches/{created.id}/results", headers={"x-api-key": api_key})
    assert early.status_code == 400 and "not ended" in early.json()["error"]["message"]

    assert drive(created.id, context) is BatchStatus.CANCELLED
    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 4
    assert {r.result.type for r in client.messages.batches.results(created.id)} == {"canceled"}


def test_list_pages_newest_first_both_ways(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[_request("a", "hi")]).id for _ in range(5)]
    newest_first = ids[::-1]

    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-paging: after_id
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert page.first_id == newest_first[0] and page.last_id == newest_first[1]
    older = client.messages.batches.list(limit=2, after_id=page.last_id)
    assert [b.id for b in older.data] == newest_first[2:4] and older.has_more
    back = client.messages.batches.list(limit=1, before_id=older.first_id)
    assert [b.id for b in back.data] == [newest_first[1]] and back.has_more
    last = client.messages.batches.list(limit=3, after_id=newest_first[2])
    assert [b.id for b in last.data] == newest_first[3:] and not last.has_more


def test_delete_only_once_ended(client: anthropic.Anthropic, base_url: str, api_key: str) -> None:
    created = client.messages.batches.create(requests=[_request("a", "hi")])
    with pytest.raises(anthropic.APIStatusError) as running:
        client.messages.batches.delete(created.id)
    assert running.value.status_code == 409 and "cancel it" in running.value.message

    client.messages.batches.cancel(created.id)
    deleted = client.messages.batches.delete(created.id)

    assert deleted.id == created.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)
    assert created.id not in [b.id for b in client.messages.batches.list()]
    # Gone from the OpenAI view of the same batches too.
    as_openai = httpx.get(
        f"{base_url}/v1/batches/{created.id}", headers={"Authorization": f"Bearer {api_key}"}
    )
    assert as_openai.status_code == 404 and as_openai.json()["error"]["message"]


def test_invalid_requests_refuse_the_whole_batch_with_every_problem(
    client: anthropic.Anthropic, context: JobContext
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.batches.create(
            requests=[
                _request("ok", "hi"),
                {
                    "custom_id": "no-max",
                    "params": {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "x"}]},
                },
                _request("tools", "hi", tools=[{"name": "t", "input_schema": {"type": "object"}}]),
                _request(
                    "image", "hi", messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]
                ),
                _request("other-model", "hi", model="claude-sonnet-4-5"),
            ]
        )
    message = raised.value.message
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "requests[1].params.max_tokens" in message and "requests[2].params.tools" in message
    assert "requests[3].params.messages[0].content[0]" in message and "'image' blocks" in message
    assert "requests[4].params.model" in message
    with context.session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0

    for bad_id in ("has space", "x" * 65, ""):
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.messages.batches.create(requests=[_request(bad_id, "hi")])
        assert "requests[0].custom_id" in bad.value.message
    with pytest.raises(anthropic.BadRequestError) as duplicate:
        client.messages.batches.create(requests=[_request("twice", "a"), _request("twice", "b")])
    assert "requests[1].custom_id" in duplicate.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[_request("a", "hi", stream=True)])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[_request("a", "hi", temperature=1.5)])


def test_auth_by_x_api_key_or_bearer_and_anthropic_shaped_errors(
    client: anthropic.Anthropic, base_url: str, api_key: str
) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.batches.retrieve("msgbatch_missing")
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "No Message Batch found with id 'msgbatch_missing'."},
    }
    stranger = anthropic.Anthropic(base_url=base_url, api_key="hb-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        stranger.messages.batches.list()
    assert denied.value.body["error"]["type"] == "authentication_error"

    bearer = httpx.get(f"{base_url}/v1/messages/batches", headers={"Authorization": f"Bearer {api_key}"})
    assert bearer.status_code == 200 and bearer.json()["data"] == []
    nothing = httpx.get(f"{base_url}/v1/messages/batches")
    assert nothing.status_code == 401 and nothing.json()["error"]["type"] == "authentication_error"
    # A direct Messages call is not served: the error says where batches go, in Anthropic's shape.
    with pytest.raises(anthropic.NotFoundError) as direct:
        client.messages.create(model=SERVED_MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "/v1/messages/batches" in direct.value.message
    # The OpenAI routes keep OpenAI's shape, and do not take Message Batches.
    openai_batch = httpx.post(
        f"{base_url}/v1/batches",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"input_file_id": "file-x", "endpoint": "/v1/messages", "completion_window": "24h"},
    )
    assert openai_batch.status_code == 400 and openai_batch.json()["error"]["param"] == "endpoint"


def test_an_expired_batch_ends_with_every_unfinished_request_expired(
    client: anthropic.Anthropic, context: JobContext, settings: Settings
) -> None:
    created = client.messages.batches.create(requests=[_request(f"r{i}", "hello") for i in range(2)])
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        batch = session.get(Batch, created.id)
        batch.expires_at = batch.created_at - timedelta(seconds=1)
        session.commit()
    engine.dispose()

    assert drive(created.id, context) is BatchStatus.EXPIRED

    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.request_counts.expired == 2
    assert ended.request_counts.succeeded == ended.request_counts.errored == 0
    assert {r.result.type for r in client.messages.batches.results(created.id)} == {"expired"}


def test_a_cancel_mid_run_keeps_the_finished_requests_and_cancels_the_rest(
    client: anthropic.Anthropic, context: JobContext, llm
) -> None:
    # Different max_tokens, so the requests finish at different engine steps.
    requests = [_request(f"r{i}", f"Count to {i}.", max_tokens=1 + 4 * i, temperature=0) for i in range(6)]
    created = client.messages.batches.create(requests=requests)

    def cancel_after_two(num_outputs: int) -> None:
        if num_outputs == 2:  # the SDK, over HTTP, while the worker is between two engine steps
            assert client.messages.batches.cancel(created.id).processing_status == "canceling"

    engine = InterceptedLLM(llm, cancel_after_two)
    assert drive(created.id, dataclasses.replace(context, load_llm=lambda: engine)) is BatchStatus.CANCELLED

    ended = client.messages.batches.retrieve(created.id)
    counts = ended.request_counts
    assert ended.processing_status == "ended" and counts.processing == counts.errored == counts.expired == 0
    assert 2 <= counts.succeeded < 6 and counts.succeeded + counts.canceled == 6
    results = {r.custom_id: r.result.type for r in client.messages.batches.results(created.id)}
    assert sorted(results) == [f"r{i}" for i in range(6)]
    assert list(results.values()).count("succeeded") == counts.succeeded
    assert list(results.values()).count("canceled") == counts.canceled
    with context.session_factory() as session:
        billed = set(
            session.scalars(sa.select(UsageRecord.custom_id).where(UsageRecord.batch_id == created.id))
        )
    assert billed == {custom_id for custom_id, kind in results.items() if kind == "succeeded"}

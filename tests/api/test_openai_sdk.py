"""The unmodified ``openai`` SDK drives the API over real HTTP (uvicorn on a free port).

No worker runs here, so batches stay ``validating`` until cancelled.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import uvicorn

from api.app import create_app
from hybatch.settings import Settings
from tests.api.helpers import SERVED_MODEL, chat_line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def base_url(settings: Settings, enqueued: list[str]) -> Iterator[str]:
    app = create_app(settings, enqueue=enqueued.append)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


@pytest.fixture
def sdk(base_url: str, new_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=new_key("sdk-user"), max_retries=0)


def test_files_round_trip(sdk: openai.OpenAI) -> None:
    content = "".join(json.dumps(chat_line(f"r{i}")) + "\n" for i in range(3)).encode()
    created = sdk.files.create(file=("requests.jsonl", content), purpose="batch")
    assert created.id.startswith("file-") and created.bytes == len(content) and created.purpose == "batch"

    assert sdk.files.retrieve(created.id).filename == "requests.jsonl"
    assert [f.id for f in sdk.files.list()] == [created.id]
    assert sdk.files.content(created.id).content == content

    deleted = sdk.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)


def test_batches_round_trip(sdk: openai.OpenAI, enqueued: list[str]) -> None:
    assert [m.id for m in sdk.models.list()] == [SERVED_MODEL]
    upload = sdk.files.create(file=("in.jsonl", json.dumps(chat_line("only")).encode()), purpose="batch")
    batches = [
        sdk.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": str(i)},
        )
        for i in range(3)
    ]
    assert enqueued == [b.id for b in batches]
    first = sdk.batches.retrieve(batches[0].id)
    assert first.status == "validating" and first.metadata == {"run": "0"}
    assert first.request_counts is not None and first.request_counts.total == 0
    assert first.usage is not None and first.usage.input_tokens_details.cached_tokens == 0

    # Auto-pagination follows `after` cursors: limit=2 forces two pages.
    listed = [b.id for b in sdk.batches.list(limit=2)]
    assert listed == [b.id for b in reversed(batches)]

    cancelled = sdk.batches.cancel(batches[0].id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None


@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/embeddings"])
def test_responses_and_embeddings_batches_are_created(sdk: openai.OpenAI, endpoint: str) -> None:
    upload = sdk.files.create(file=("in.jsonl", json.dumps(chat_line("only")).encode()), purpose="batch")
    batch = sdk.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")
    assert batch.endpoint == endpoint and batch.status == "validating"
    assert sdk.batches.retrieve(batch.id).endpoint == endpoint


def test_errors_surface_as_sdk_exceptions(sdk: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.files.create(file=("x.jsonl", b"{oops\n"), purpose="batch")
    assert bad.value.code == "invalid_json_line"

    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id="file-x", endpoint="/v1/moderations", completion_window="24h")

    with pytest.raises(openai.NotFoundError):
        sdk.batches.retrieve("batch_missing")

    stranger = openai.OpenAI(base_url=base_url, api_key="hb-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.files.list()


def test_a_direct_chat_completion_raises_not_found_that_points_at_batches(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model=SERVED_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 404
    message = raised.value.message
    assert "batches only" in message and "/v1/files" in message and "/v1/batches" in message, message
    assert raised.value.type == "invalid_request_error"

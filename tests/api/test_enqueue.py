"""The real enqueuer publishes ``worker.run_batch`` by name to the configured queue and broker."""

import secrets
from pathlib import Path

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from api.enqueue import CeleryEnqueuer
from hybatch.tasks import RUN_BATCH_TASK


def _receive_one(broker_url: str, queue: str) -> tuple[dict, list]:
    with Connection(broker_url) as connection:
        simple_queue = connection.SimpleQueue(queue)
        try:
            message = simple_queue.get(block=True, timeout=10)
            message.ack()
            args, _kwargs, _embed = message.decode()
            return message.headers, args
        finally:
            simple_queue.close()


def test_embedded_broker_needs_no_server(tmp_path: Path) -> None:
    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    CeleryEnqueuer(broker_url, "hybatch-test")("batch_abc")
    headers, args = _receive_one(broker_url, "hybatch-test")
    assert headers["task"] == RUN_BATCH_TASK and args == ["batch_abc"]


@pytest.mark.redis
def test_redis_broker(redis_url: str) -> None:
    queue = f"hybatch-test-{secrets.token_hex(4)}"  # never collides with a real worker's queue
    CeleryEnqueuer(redis_url, queue)("batch_xyz")
    try:
        headers, args = _receive_one(redis_url, queue)
    finally:
        with Connection(redis_url) as connection:
            connection.default_channel.queue_delete(queue)
    assert headers["task"] == RUN_BATCH_TASK and args == ["batch_xyz"]


def test_unreachable_broker_raises(tmp_path: Path) -> None:
    enqueuer = CeleryEnqueuer("redis://127.0.0.1:1/0", "hybatch-test")
    with pytest.raises(OperationalError):
        enqueuer("batch_never")


def test_a_failed_publish_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enqueuer = CeleryEnqueuer(f"sqla+sqlite:///{tmp_path / 'broker.db'}", "hybatch-test")
    publish = enqueuer._publish
    attempts = []

    def flaky(batch_id: str) -> None:
        attempts.append(batch_id)
        if len(attempts) == 1:
            raise RuntimeError("table kombu_queue already exists")  # a racing first connection
        publish(batch_id)

    monkeypatch.setattr(enqueuer, "_publish", flaky)
    monkeypatch.setattr("api.enqueue.PUBLISH_BACKOFF_S", 0.0)
    enqueuer("batch_retry")
    assert attempts == ["batch_retry", "batch_retry"]
    assert _receive_one(f"sqla+sqlite:///{tmp_path / 'broker.db'}", "hybatch-test")[1] == ["batch_retry"]

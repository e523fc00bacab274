"""End-to-end fixtures: a runnable tiny checkpoint and the environment of a service under test."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybatch import accounts
from hybatch.db import make_engine, make_session_factory, unit_of_work
from tests.worker.jobs.service_checkpoint import shared_service_checkpoint


@pytest.fixture(scope="session")
def service_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_service_checkpoint(tmp_path_factory.getbasetemp())


def service_env(*, data_dir: Path, port: int, model: Path, queue: str, **settings: str) -> dict[str, str]:
    """The environment of a hybatch process: only these HYBATCH_* settings, small CPU caches."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HYBATCH_")}
    # One torch thread: on the shared 2-core test machines more threads contend and run ~10x slower.
    env["OMP_NUM_THREADS"] = "1"
    env.update(
        HYBATCH_DATA_DIR=str(data_dir),
        HYBATCH_PORT=str(port),
        HYBATCH_MODEL=str(model),
        HYBATCH_TASK_QUEUE=queue,
        HYBATCH_DEVICE="cpu",
        HYBATCH_KV_CACHE_GB="0.02",
        HYBATCH_HOST_CACHE_GB="0",
        HYBATCH_DISK_CACHE_GB="0",
    )
    env.update({f"HYBATCH_{name.upper()}": value for name, value in settings.items()})
    return env


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    """A queue name no other run uses; its keys are removed from Redis afterwards."""
    import redis

    name = f"hybatch-e2e-{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
        # A killed worker's message stays in kombu's shared "unacked" hash (the solo pool acks after
        # the task returns); left there, it would be put back on this queue in an hour.
        for tag, raw in client.hgetall("unacked").items():
            if json.loads(raw)[2] == name:  # [message, exchange, routing key]
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()


def new_api_key(database_url: str, account_name: str = "e2e") -> str:
    """A new account with one API key in the database at ``database_url``; returns the key."""
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            account = accounts.create_account(session, account_name)
            return accounts.create_api_key(session, account.id).secret
    finally:
        engine.dispose()

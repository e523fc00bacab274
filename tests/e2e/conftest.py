"""End-to-end fixtures: a runnable tiny checkpoint and the environment of a service under test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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

"""docker-compose.yml, checked without a Docker engine: services, env names, commands, GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from hybatch.cli import app as cli_app
from hybatch.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = REPO_ROOT / "docker-compose.yml"
SHARED = (
    "HYBATCH_DATABASE_URL",
    "HYBATCH_BROKER_URL",
    "HYBATCH_TASK_QUEUE",
    "HYBATCH_FILES_DIR",
    "HYBATCH_MODEL",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text())


def _env(compose: dict, service: str) -> dict[str, str]:
    return {key: str(value) for key, value in compose["services"][service].get("environment", {}).items()}


def _cli_commands() -> set[str]:
    return {command.name or command.callback.__name__ for command in cli_app.registered_commands}


def test_services(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "api", "worker"}


@pytest.mark.parametrize("service", ["migrate", "api", "worker"])
def test_every_hybatch_variable_is_a_setting(
    compose: dict, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {f"HYBATCH_{name.upper()}" for name in Settings.model_fields}
    env = _env(compose, service)
    assert set(env) <= known, set(env) - known
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # every value parses as its setting
    assert settings.database_url == env["HYBATCH_DATABASE_URL"]


def test_api_and_workers_agree(compose: dict) -> None:
    api, worker, migrate = (_env(compose, name) for name in ("api", "worker", "migrate"))
    for key in SHARED:
        assert api[key] == worker[key] == migrate[key], key


def test_urls_point_at_the_compose_services(compose: dict) -> None:
    env = _env(compose, "api")
    database = make_url(env["HYBATCH_DATABASE_URL"])
    postgres = compose["services"]["postgres"]["environment"]
    assert (database.host, database.username, database.password, database.database) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert env["HYBATCH_BROKER_URL"].startswith("redis://redis:")


def test_commands_are_real_cli_commands(compose: dict) -> None:
    commands = _cli_commands()
    for service, expected in (("migrate", "migrate"), ("api", "api"), ("worker", "worker")):
        command = compose["services"][service]["command"]
        assert command[:2] == ["hybatch", expected] and expected in commands


def test_order_and_exposure(compose: dict) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in ("api", "worker"):
        assert services[service]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    api_env = _env(compose, "api")
    assert api_env["HYBATCH_HOST"] == "0.0.0.0"
    assert f"{api_env['HYBATCH_PORT']}:{api_env['HYBATCH_PORT']}" in services["api"]["ports"]


def test_worker_reserves_one_gpu(compose: dict) -> None:
    [device] = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    assert _env(compose, "worker")["HYBATCH_DEVICE"] == "cuda"


def test_files_volume_is_shared_and_declared(compose: dict) -> None:
    files_dir = _env(compose, "api")["HYBATCH_FILES_DIR"]
    for service in ("api", "worker"):
        assert f"files:{files_dir}" in compose["services"][service]["volumes"]
    used = {
        mount.split(":")[0]
        for service in compose["services"].values()
        for mount in service.get("volumes", [])
        if not mount.startswith((".", "/"))
    }
    assert used <= set(compose["volumes"])


def test_docker_compose_config_when_docker_is_installed() -> None:
    has_compose = shutil.which("docker") is not None and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )
    if not has_compose:
        pytest.skip("no `docker compose` on this machine; the YAML checks above still ran")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_PATH), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

"""docker-compose.yml, checked without a Docker engine: schema, services, env, commands, GPU, secrets.

``compose_spec/compose-spec.json`` is the Compose Specification's JSON schema (Apache-2.0, its
LICENSE beside it) as the ``check-jsonschema`` package (0.39.0) vendors it; every other check runs
on the YAML after compose's own ``${VAR:-default}`` / ``${VAR:?message}`` interpolation. Where the
``docker compose`` plugin exists, ``docker compose config`` (which needs no engine) checks it too.
"""

from __future__ import annotations

import inspect
import json
import os
import re
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
SCHEMA_PATH = Path(__file__).resolve().parent / "compose_spec" / "compose-spec.json"
HYBATCH_SERVICES = ("migrate", "api", "worker", "beat")
NODE_WORKER = "worker-node"  # one worker over a node's GPUs (tensor parallel), behind a profile
OUR_SERVICES = (*HYBATCH_SERVICES, NODE_WORKER)
SHARED = (
    "HYBATCH_DATABASE_URL",
    "HYBATCH_BROKER_URL",
    "HYBATCH_TASK_QUEUE",
    "HYBATCH_FILES_DIR",
    "HYBATCH_MODEL",
)
# What a user's .env holds in these checks: only the required secret.
TEST_ENV = {"POSTGRES_PASSWORD": "test-only-password"}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's interpolation of ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}``."""
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        # With a colon an empty value counts as unset, as in the shell.
        is_set = bool(env.get(name)) if op and op.startswith(":") else name in env
        if is_set:
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict) -> dict:
    return _interpolate(raw_compose, TEST_ENV)


def _env(compose: dict, service: str) -> dict[str, str]:
    """The service's hybatch settings (the node worker also sets NCCL's own variables)."""
    environment = compose["services"][service].get("environment", {})
    return {key: str(value) for key, value in environment.items() if not key.startswith("NCCL_")}


def _cli_commands() -> set[str]:
    return {command.name or command.callback.__name__ for command in cli_app.registered_commands}


def test_the_file_follows_the_compose_specification(raw_compose: dict) -> None:
    import jsonschema  # a dev dependency: the compose file is validated against the spec everywhere

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(raw_compose)
    ]
    assert not problems, problems
    broken = {**raw_compose, "services": {**raw_compose["services"], "api": {"image": "x", "healthcheck": 5}}}
    assert not validator.is_valid(broken)  # the schema does reject what compose would


def test_services(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", "redis", *OUR_SERVICES}
    # `docker compose up` starts every service but the node worker, which needs the node profile.
    assert [name for name, service in compose["services"].items() if service.get("profiles")] == [NODE_WORKER]
    assert compose["services"][NODE_WORKER]["profiles"] == ["node"]


def test_every_service_has_an_image_and_ours_share_one_build(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in OUR_SERVICES}
    assert len(builds) == 1 and {services[name]["image"] for name in OUR_SERVICES} == {"hybatch:local"}


def test_the_image_has_a_c_compiler_for_triton(compose: dict) -> None:
    dockerfile = compose["services"]["worker"]["build"]["dockerfile_inline"]
    assert "build-essential" in dockerfile and "Triton" in dockerfile  # installed, and why
    assert dockerfile.index("build-essential") < dockerfile.index("pip install")


@pytest.mark.parametrize("service", OUR_SERVICES)
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


def test_api_workers_and_beat_agree(compose: dict) -> None:
    envs = {name: _env(compose, name) for name in OUR_SERVICES}
    for key in SHARED:
        assert len({env[key] for env in envs.values()}) == 1, key


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
    assert database.password == TEST_ENV["POSTGRES_PASSWORD"]
    assert env["HYBATCH_BROKER_URL"].startswith("redis://redis:")


def test_the_database_password_comes_from_the_env_file_only(raw_compose: dict) -> None:
    """No password in the repository: compose refuses to start until .env sets one."""
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        _interpolate(raw_compose, {})
    raw_url = raw_compose["x-hybatch-env"]["HYBATCH_DATABASE_URL"]
    assert make_url(_interpolate(raw_url, {"POSTGRES_PASSWORD": "p"})).password == "p"
    assert raw_compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    example = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if re.match(r"\w+=", line)
    )
    assert example["POSTGRES_PASSWORD"] == ""  # documented, never filled in
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def test_commands_are_real_cli_commands(compose: dict) -> None:
    commands = _cli_commands()
    for service in HYBATCH_SERVICES:
        command = compose["services"][service]["command"]
        assert command[:2] == ["hybatch", service] and service in commands, command


def test_order_and_exposure(compose: dict) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in ("api", "worker", NODE_WORKER, "beat"):
        assert services[service]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[service]["depends_on"]["redis"]["condition"] == "service_healthy"
    api_env = _env(compose, "api")
    assert api_env["HYBATCH_HOST"] == "0.0.0.0"
    assert f"{api_env['HYBATCH_PORT']}:{api_env['HYBATCH_PORT']}" in services["api"]["ports"]


def test_long_running_services_have_real_healthchecks(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "api", "worker", NODE_WORKER):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    api_probe = " ".join(services["api"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{_env(compose, 'api')['HYBATCH_PORT']}/healthz" in api_probe
    for worker in ("worker", NODE_WORKER):
        worker_probe = " ".join(services[worker]["healthcheck"]["test"])
        port = _env(compose, worker)["HYBATCH_WORKER_METRICS_PORT"]
        assert f"http://127.0.0.1:{port}/metrics" in worker_probe, worker


def test_worker_reserves_one_gpu(compose: dict) -> None:
    [device] = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    assert _env(compose, "worker")["HYBATCH_DEVICE"] == "cuda"


def test_the_node_worker_runs_one_engine_over_its_eight_gpus(
    compose: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = compose["services"][NODE_WORKER]
    assert node["command"] == ["hybatch", "worker", "--tensor-parallel", "8"]
    worker_command = next(c for c in cli_app.registered_commands if c.callback.__name__ == "worker")
    options = inspect.signature(worker_command.callback).parameters
    assert {"tensor_parallel", "expert_parallel"} <= set(options)  # `hybatch worker --tensor-parallel N`
    [device] = node["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 8 and "gpu" in device["capabilities"]
    # NCCL and torch move tensors between the ranks through shared memory: the host's, or a large one.
    assert node["ipc"] == "host" and node["shm_size"] == "16gb"
    env = _env(compose, NODE_WORKER)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.device == "cuda" and settings.kv_cache_gb == 30  # per GPU: see docs/hardware.md
    assert node["environment"]["NCCL_DEBUG"] == "WARN"
    # Its own disk tier: a disk cache directory is one engine's (a second worker on it cannot load).
    assert "kvcache-node:/cache/kv" in node["volumes"]
    assert "kvcache:/cache/kv" in compose["services"]["worker"]["volumes"]


def test_worker_cache_sizes_are_defaults_an_env_file_can_change(raw_compose: dict) -> None:
    raw = raw_compose["services"]["worker"]["environment"]
    for name, default in (
        ("HYBATCH_KV_CACHE_GB", "40"),
        ("HYBATCH_HOST_CACHE_GB", "64"),
        ("HYBATCH_DISK_CACHE_GB", "200"),
    ):
        assert raw[name] == f"${{{name}:-{default}}}", name
        assert _interpolate(raw[name], {**TEST_ENV, name: "8"}) == "8"
    assert "80 GB" in COMPOSE_PATH.read_text() and "128 GB" in COMPOSE_PATH.read_text()  # the hardware meant


def test_files_volume_is_shared_and_declared(compose: dict) -> None:
    files_dir = _env(compose, "api")["HYBATCH_FILES_DIR"]
    for service in ("api", "worker", NODE_WORKER):
        assert f"files:{files_dir}" in compose["services"][service]["volumes"]
    used = {
        mount.split(":")[0]
        for service in compose["services"].values()
        for mount in service.get("volumes", [])
        if not mount.startswith((".", "/"))
    }
    assert used <= set(compose["volumes"])


def test_the_image_gets_no_local_state_or_secrets() -> None:
    """`COPY . .` with .dockerignore: never the virtualenv, var/ (database, session secret, files), .env."""
    patterns = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", ".env", "**/__pycache__", ".pytest_cache", "test-artifacts"} <= patterns
    assert "!.env.example" in patterns


def _docker_compose_available() -> bool:
    return shutil.which("docker") is not None and (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )


def _docker_compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_PATH), "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},  # no POSTGRES_*
    )


def test_docker_compose_config_when_docker_is_installed(tmp_path: Path) -> None:
    if not _docker_compose_available():
        pytest.skip("no `docker compose` plugin on this machine; the schema and YAML checks above still ran")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in TEST_ENV.items()))
    result = _docker_compose_config(env_file)
    assert result.returncode == 0, result.stderr

    env_file.write_text("")
    missing = _docker_compose_config(env_file)
    assert (
        missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr and ".env.example" in missing.stderr
    )

"""``hybatch bench api``: the API under 10, 100 and 1,000 concurrent clients (list, get, 1 KB uploads).

Starts a real API process (``hybatch migrate``, an account and key, then ``hybatch api``) on a free
loopback port with a temporary data dir — SQLite by default, ``--database-url`` for Postgres (give
it a scratch database: the bench migrates it and leaves its rows) — seeds a few files, then drives
it with ``api.load_client`` at each level. Prints req/s, errors, p50 and p99 per level and each
level's req/s as a ratio of the first level's, measured in the same run.
The goal: 0 errors at 100 and 1,000 clients, p99 under 1 s at 100 (2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from api.load_client import report, run_level, upload_body

STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
NUM_SEEDED_FILES = 20
P99_GOAL_S = 1.0
LOG_TAIL_CHARS = 3000
# Settings that would point the API away from its fresh data dir (the database comes from the option).
_REPLACED_SETTINGS = ("DATA_DIR", "DATABASE_URL", "BROKER_URL", "FILES_DIR", "FILES_URL", "HOST", "PORT")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(data_dir: Path, port: int, database_url: str | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key.removeprefix("HYBATCH_") not in _REPLACED_SETTINGS
    }
    env.update(HYBATCH_DATA_DIR=str(data_dir), HYBATCH_HOST="127.0.0.1", HYBATCH_PORT=str(port))
    if database_url is not None:
        env["HYBATCH_DATABASE_URL"] = database_url
    return env


def _hybatch(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hybatch", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"hybatch {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _wait_until_serving(base_url: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with code {api.returncode} while starting")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer /healthz within {STARTUP_TIMEOUT_S} s")


def _seed_files(base_url: str, secret: str) -> list[str]:
    headers = {"Authorization": f"Bearer {secret}"}
    file_ids = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for _ in range(NUM_SEEDED_FILES):
            response = http.post(
                "/v1/files", files={"file": ("seed.jsonl", upload_body())}, data={"purpose": "batch"}
            )
            response.raise_for_status()
            file_ids.append(response.json()["id"])
    return file_ids


def _stop(api: subprocess.Popen[bytes]) -> None:
    if api.poll() is not None:
        return
    api.terminate()
    try:
        api.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        api.kill()
        api.wait()


def _client_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"--clients wants positive counts like 10,100,1000, not {text!r}")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybatch bench api", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", type=_client_levels, default=[10, 100, 1000], help="concurrency levels, comma-separated"
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="seconds of load per level")
    parser.add_argument(
        "--timeout-s", type=float, default=30.0, help="a request unanswered this long is an error"
    )
    parser.add_argument(
        "--database-url", help="SQLAlchemy URL of a scratch database (default: SQLite in the temp data dir)"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hybatch-bench-api-") as temp:
        data_dir = Path(temp)
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = _environment(data_dir, port, args.database_url)
        account = f"bench-{secrets.token_hex(4)}"
        _hybatch(["migrate"], env)
        _hybatch(["accounts", "create", account], env)
        secret = _hybatch(["keys", "create", "--account", account], env).strip()
        log_path = data_dir / "api.log"
        with open(log_path, "wb") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "hybatch", "api"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            _wait_until_serving(base_url, api)
            file_ids = _seed_files(base_url, secret)
            database = "Postgres" if args.database_url else "SQLite (embedded)"
            print(
                f"hybatch api (pid {api.pid}) on {database}; {args.duration_s:g} s per level; "
                f"mix: list, get, 1 KB upload in turn"
            )
            results = []
            for clients in args.clients:
                result = asyncio.run(
                    run_level(base_url, secret, file_ids, clients, args.duration_s, args.timeout_s)
                )
                results.append(result)
                print(f"  {clients} clients: {result.requests_per_s:.1f} req/s, {result.num_errors} errors")
            print()
            for line in report(results, P99_GOAL_S):
                print(line)
        except Exception:
            print(f"the API's output (last {LOG_TAIL_CHARS} characters):", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:], file=sys.stderr)
            raise
        finally:
            _stop(api)
    return 0

"""Faults in a fleet of real processes on Postgres + Redis: a worker killed or stalled mid-shard, a
cancel during a takeover, the API killed mid-upload.

Leases of ``LEASE_S`` seconds and shards of four requests keep each run short. Every shard is one
system prompt's four questions (the cut follows the prompt tree): one short answer and three long
ones, so a shard records its first request well before its last, and a fault can land mid-shard.
A ``ShardWatch`` thread reads the batch's ``batch_shards`` rows every ``POLL_S`` seconds and keeps
when each lease on a shard was first seen taken (``attempts`` counts the takes) and by which worker
process (a lease owner is ``host:pid:tag``), so a test can say how long a takeover took.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from openai import OpenAI

from hybatch.db import make_engine
from hybatch.migrate import upgrade_to_head
from hybatch.models import BatchRequestResult, BatchShard, File, FilePurpose
from tests.e2e.checks import assert_batch_accounted, assert_ended_batch_accounted
from tests.e2e.conftest import new_api_key, service_env
from tests.e2e.service import TERMINAL_STATUSES, ServiceProcess, api_is_healthy, free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

LEASE_S = 2.0
SHARD_REQUESTS = 4
POLL_S = 0.02
STARTUP_TIMEOUT_S = 60
BATCH_TIMEOUT_S = 60
# A dead worker's lease runs out at most LEASE_S after its last renewal, and the next sweep (every
# LEASE_S / 2) sends its shard again: a survivor that is free takes it within 1.5 lease periods, a
# busy one (solo pool, shards queued first) once its last shard is done. The bound allows two lease
# periods, plus a second for three services and the test sharing two cores with other work.
TAKEOVER_SLACK_S = 1.0
SWEEP_SLACK_S = 0.5  # a sweep due every LEASE_S / 2 may start late on a busy machine
CANCEL_BOUND_S = 2.0  # a shard polls its batch every 0.5 s; ending a 32-request batch is quick
SHORT_TOKENS = 8
LONG_TOKENS = 360  # about a second of decoding for a shard on the tiny checkpoint (512 positions)


# -- the fleet --------------------------------------------------------------------------------


@dataclass
class Fleet:
    client: OpenAI
    api: ServiceProcess
    workers: list[ServiceProcess]
    database: sa.Engine  # the test's own connections, for reading what the services wrote
    files_dir: Path

    def live_processes(self) -> list[ServiceProcess]:
        return [p for p in (self.api, *self.workers) if p.is_running()]


def _resume_then_stop(process: ServiceProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.process.pid, signal.SIGCONT)  # a stopped group cannot act on SIGTERM
    process.stop()


def _start_api(env: dict[str, str], request: pytest.FixtureRequest) -> ServiceProcess:
    api = ServiceProcess(["api"], env)
    request.addfinalizer(api.stop)
    base_url = f"http://127.0.0.1:{env['HYBATCH_PORT']}"
    wait_until(lambda: api_is_healthy(base_url), timeout_s=STARTUP_TIMEOUT_S, processes=[api], what="the API")
    return api


def _start_fleet(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    queue: str,
    checkpoint: Path,
    request: pytest.FixtureRequest,
    **settings: str,
) -> Fleet:
    """The API and two workers on one database, broker queue and files directory, all ready
    (``settings``: more HYBATCH_* settings for all of them)."""
    upgrade_to_head(database_url)
    key = new_api_key(database_url, "faults")
    port = free_port()
    data_dir = tmp_path / "shared"  # the files directory API and workers share
    env = service_env(
        data_dir=data_dir,
        port=port,
        model=checkpoint,
        queue=queue,
        database_url=database_url,
        broker_url=redis_url,
        lease_s=str(LEASE_S),
        shard_requests=str(SHARD_REQUESTS),
        **settings,
    )
    workers = [ServiceProcess(["worker", "--loglevel=info"], env) for _ in range(2)]
    for worker in workers:
        request.addfinalizer(lambda worker=worker: _resume_then_stop(worker))
    api = _start_api(env, request)
    wait_until(
        lambda: all(worker.worker_ready for worker in workers),
        timeout_s=STARTUP_TIMEOUT_S,
        processes=[api, *workers],
        what="the workers",
    )
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    database = make_engine(database_url)
    request.addfinalizer(database.dispose)
    return Fleet(client, api, workers, database, data_dir / "files")


# The tiny checkpoint answers assistants 3 and 9 with a NUL character somewhere, which Postgres's
# JSON operators refuse to read back (reported, to be fixed in the core): leave them out here.
ASSISTANTS = (0, 1, 2, 4, 5, 6, 7, 8)


def _shard_lines(num_shards: int) -> list[dict]:
    """``num_shards`` system prompts with four questions each; per prompt one short answer, three long."""
    lines = []
    for shard in range(num_shards):
        for question in range(SHARD_REQUESTS):
            messages = [
                {"role": "system", "content": f"You are assistant {ASSISTANTS[shard]}."},
                {"role": "user", "content": f"Question {question}: count to {question}."},
            ]
            max_tokens = SHORT_TOKENS if question == 0 else LONG_TOKENS
            body = {"model": "tiny-test", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
            lines.append(
                {
                    "custom_id": f"s{shard}-q{question}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
    return lines


def _submit(client: OpenAI, lines: list[dict]):
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def _wait_for_end(fleet: Fleet, batch_id: str):
    seen = {}

    def ended() -> bool:
        seen["batch"] = fleet.client.batches.retrieve(batch_id)
        return seen["batch"].status in TERMINAL_STATUSES

    wait_until(
        ended, timeout_s=BATCH_TIMEOUT_S, processes=fleet.live_processes(), what=f"batch {batch_id} to end"
    )
    return seen["batch"]


def _file_lines(client: OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _no_error_lines(fleet: Fleet, batch) -> None:
    errors = _file_lines(fleet.client, batch.error_file_id)
    logs = "\n".join(f"--- hybatch {p.args} (pid {p.process.pid}):\n{p.output}" for p in fleet.workers)
    assert errors == [], f"{json.dumps(errors[:3], indent=1)}\n{logs}"


def _num_result_files(fleet: Fleet) -> int:
    """Result files (output and error) that exist: one batch that ended once has one or two."""
    with fleet.database.connect() as connection:
        return connection.scalar(
            sa.select(sa.func.count()).select_from(File).where(File.purpose == FilePurpose.BATCH_OUTPUT)
        )


# -- watching the shards ----------------------------------------------------------------------


def _owner_pid(owner: str | None) -> int | None:
    """The worker process of a lease owner ``host:pid:tag``."""
    return None if owner is None else int(owner.rsplit(":", 2)[1])


@dataclass
class ShardHistory:
    """One shard as seen so far: its requests, its latest row, and when each take was first seen."""

    custom_ids: frozenset[str]
    num_requests: int
    status: str = "pending"
    owner_pid: int | None = None
    attempts: int = 0
    lease_expires_at: datetime | None = None  # the last one seen (the row keeps none once done)
    published_at: datetime | None = None  # when a task for it was last sent
    taken_at: dict[int, float] = field(default_factory=dict)  # attempt -> time.monotonic()
    # attempt -> the wall clock then, the clock leases use (compared with a lease's end: the
    # machine's wall clock may be stepped against the monotonic one mid-test)
    taken_wall: dict[int, datetime] = field(default_factory=dict)
    taker_pid: dict[int, int | None] = field(default_factory=dict)  # attempt -> pid (None: done unseen)
    done_at: float | None = None


class ShardWatch(threading.Thread):
    """Reads the batch's shard rows every POLL_S seconds until ``stop()``."""

    def __init__(self, database: sa.Engine, files_dir: Path, batch_id: str) -> None:
        super().__init__(name="shard-watch", daemon=True)
        self.database = database
        self.files_dir = files_dir
        self.batch_id = batch_id
        self.shards: dict[int, ShardHistory] = {}
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(POLL_S):
                self._poll()
        except BaseException as error:  # shown by the next snapshot()
            self.error = error

    def _poll(self) -> None:
        with self.database.connect() as connection:
            rows = connection.execute(
                sa.select(
                    BatchShard.shard_index,
                    BatchShard.status,
                    BatchShard.lease_owner,
                    BatchShard.attempts,
                    BatchShard.num_requests,
                    BatchShard.input_key,
                    BatchShard.lease_expires_at,
                    BatchShard.published_at,
                ).where(BatchShard.batch_id == self.batch_id)
            ).all()
        now, wall = time.monotonic(), datetime.now(UTC)
        with self._lock:
            for row in rows:
                shard = self.shards.get(row.shard_index)
                if shard is None:  # its stored requests exist before its row is committed
                    stored = (self.files_dir / row.input_key).read_text().splitlines()
                    ids = frozenset(json.loads(line)["custom_id"] for line in stored)
                    shard = self.shards[row.shard_index] = ShardHistory(ids, row.num_requests)
                shard.status, shard.owner_pid, shard.attempts = (
                    row.status,
                    _owner_pid(row.lease_owner),
                    row.attempts,
                )
                shard.lease_expires_at = row.lease_expires_at or shard.lease_expires_at
                shard.published_at = row.published_at
                if row.attempts and row.attempts not in shard.taken_at:
                    shard.taken_at[row.attempts] = now
                    shard.taken_wall[row.attempts] = wall
                    shard.taker_pid[row.attempts] = shard.owner_pid
                if row.status == "done" and shard.done_at is None:
                    shard.done_at = now

    def snapshot(self) -> dict[int, ShardHistory]:
        if self.error is not None:
            raise AssertionError(f"watching the shards failed: {self.error!r}") from self.error
        with self._lock:
            return {
                index: ShardHistory(
                    **{
                        **vars(s),
                        "taken_at": dict(s.taken_at),
                        "taken_wall": dict(s.taken_wall),
                        "taker_pid": dict(s.taker_pid),
                    }
                )
                for index, s in self.shards.items()
            }

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)


def _watch(fleet: Fleet, batch_id: str, request: pytest.FixtureRequest) -> ShardWatch:
    watch = ShardWatch(fleet.database, fleet.files_dir, batch_id)
    watch.start()
    request.addfinalizer(watch.stop)
    return watch


def _recorded_ids(fleet: Fleet, batch_id: str) -> set[str]:
    with fleet.database.connect() as connection:
        return set(
            connection.scalars(
                sa.select(BatchRequestResult.custom_id).where(BatchRequestResult.batch_id == batch_id)
            )
        )


@dataclass(frozen=True)
class MidShard:
    """A worker caught running a shard with some, not all, of its requests recorded."""

    worker: ServiceProcess
    shard_index: int
    attempt: int  # the take the worker is running under
    num_recorded: int


def _wait_for_a_worker_mid_shard(fleet: Fleet, watch: ShardWatch, batch_id: str) -> MidShard:
    by_pid = {worker.process.pid: worker for worker in fleet.workers}
    found: list[MidShard] = []

    def mid_shard() -> bool:
        recorded = _recorded_ids(fleet, batch_id)
        for index, shard in watch.snapshot().items():
            num_recorded = len(shard.custom_ids & recorded)
            if (
                shard.status == "running"
                and shard.owner_pid in by_pid
                and 0 < num_recorded < shard.num_requests
            ):
                found.append(MidShard(by_pid[shard.owner_pid], index, shard.attempts, num_recorded))
                return True
        return False

    wait_until(
        mid_shard, timeout_s=BATCH_TIMEOUT_S, processes=fleet.live_processes(), what="a worker in mid-shard"
    )
    return found[0]


def _assert_still_mid_shard(fleet: Fleet, watch: ShardWatch, batch_id: str, caught: MidShard) -> None:
    """The fault landed before the caught shard was done (a premise of the test, not of the system)."""
    shard = watch.snapshot()[caught.shard_index]
    recorded = shard.custom_ids & _recorded_ids(fleet, batch_id)
    assert len(recorded) < shard.num_requests and shard.status == "running", (
        f"shard {caught.shard_index} finished before the fault landed: make its requests longer"
    )


@dataclass(frozen=True)
class Fault:
    """When a fault hit a worker: ``at`` on the monotonic clock, ``wall`` on the clock leases use."""

    at: float
    wall: datetime

    @classmethod
    def now(cls) -> Fault:
        return cls(time.monotonic(), datetime.now(UTC))


@dataclass(frozen=True)
class Takeover:
    """A caught shard's next take after a fault, in seconds after the fault."""

    lease_left_s: float  # until the stricken worker's lease ran out
    resent_s: float  # until a sweeper sent a task for the shard again
    after_s: float  # until the shard was taken again
    after_wall_s: float  # the same on the wall clock, to compare with lease_left_s
    busy_s: float  # until the end of the last shard done before it was taken again
    bound_s: float  # what after_s may be: two lease periods or busy_s, whichever is later, + slack
    taker_pid: int | None
    timeline: str  # every shard's takes and end, for a failure's message

    def __str__(self) -> str:
        return (
            f"lease ran out after {self.lease_left_s:.2f} s, resent after {self.resent_s:.2f} s, taken"
            f" over after {self.after_s:.2f} s ({self.after_wall_s:.2f} s by the wall clock; bound"
            f" {self.bound_s:.2f} s; the survivor was busy until {self.busy_s:.2f} s)"
        )


def _wait_for_takeover(fleet: Fleet, watch: ShardWatch, caught: MidShard, fault: Fault) -> Takeover:
    """Waits until another take of the caught shard is seen; when it came and when it had to come.

    The survivor runs one task at a time: when it was still busy with shards (taken before or after
    the fault) two lease periods after the fault, it may take the shard once the last one is done.
    """
    lease_expires_at = watch.snapshot()[caught.shard_index].lease_expires_at
    next_attempt = caught.attempt + 1
    wait_until(
        lambda: next_attempt in watch.snapshot()[caught.shard_index].taken_at,
        timeout_s=BATCH_TIMEOUT_S,
        processes=fleet.live_processes(),
        what=f"shard {caught.shard_index} to be taken over",
    )
    shards = watch.snapshot()
    shard = shards[caught.shard_index]
    taken_at = shard.taken_at[next_attempt]
    busy_until = max(
        (s.done_at for s in shards.values() if s.done_at is not None and s.done_at <= taken_at),
        default=fault.at,
    )
    free_at = max(fault.at + 2 * LEASE_S, busy_until)
    assert lease_expires_at is not None and shard.published_at is not None
    return Takeover(
        lease_left_s=(lease_expires_at - fault.wall).total_seconds(),
        resent_s=(shard.published_at - fault.wall).total_seconds(),
        after_s=taken_at - fault.at,
        after_wall_s=(shard.taken_wall[next_attempt] - fault.wall).total_seconds(),
        busy_s=busy_until - fault.at,
        bound_s=free_at - fault.at + TAKEOVER_SLACK_S,
        taker_pid=shard.taker_pid[next_attempt],
        timeline=_timeline(shards, fault),
    )


def _timeline(shards: dict[int, ShardHistory], fault: Fault) -> str:
    def since(at: float) -> str:
        return f"{at - fault.at:+.2f} s"

    return "\n".join(
        f"shard {index}: "
        + ", ".join(f"take {n} by {shard.taker_pid[n]} at {since(at)}" for n, at in shard.taken_at.items())
        + (f", done at {since(shard.done_at)}" if shard.done_at is not None else f", {shard.status}")
        for index, shard in sorted(shards.items())
    )


def _assert_taken_over_in_time(what: str, takeover: Takeover, fleet: Fleet) -> None:
    """The lease ran out within a lease period; the survivor took the shard as soon as it was free
    (see TAKEOVER_SLACK_S): straight after a shard of its own (a worker done with a shard takes a dead
    worker's shard of the batch next), or from the task a sweep sent within half a period more."""
    print(f"\n{what}: {takeover}")
    tasks = "\n".join(
        f"--- pid {w.process.pid}:\n" + "".join(line for line in w.lines if "Task" in line or "shard" in line)
        for w in fleet.workers
    )
    explained = f"{takeover}\n{takeover.timeline}\n{tasks}"
    assert 0 < takeover.lease_left_s <= LEASE_S, explained
    assert takeover.lease_left_s < takeover.after_wall_s and takeover.after_s <= takeover.bound_s, explained
    if takeover.resent_s > 0:  # a sweep sent it again (before the survivor took it, if at all)
        sweep_due_s = takeover.lease_left_s + LEASE_S / 2 + SWEEP_SLACK_S
        assert takeover.lease_left_s < takeover.resent_s <= sweep_due_s, explained


# -- the tests --------------------------------------------------------------------------------


def test_a_killed_workers_shard_runs_again_on_the_other_worker_within_two_lease_periods(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    fleet = _start_fleet(tmp_path, empty_postgres_url, redis_url, queue, service_checkpoint, request)
    # Three shards: the survivor is done with the other two before the lease runs out, so the
    # takeover waits for the lease and the sweep alone (the other tests queue more shards first).
    requests = _shard_lines(num_shards=3)
    batch = _submit(fleet.client, requests)
    watch = _watch(fleet, batch.id, request)
    caught = _wait_for_a_worker_mid_shard(fleet, watch, batch.id)

    killed = Fault.now()
    caught.worker.kill()  # SIGKILL to the whole process group; it is not started again
    _assert_still_mid_shard(fleet, watch, batch.id, caught)
    [survivor] = [worker for worker in fleet.workers if worker is not caught.worker]
    takeover = _wait_for_takeover(fleet, watch, caught, killed)
    _assert_taken_over_in_time("SIGKILL", takeover, fleet)
    assert takeover.taker_pid in (survivor.process.pid, None)  # None: taken and done between two polls
    batch = _wait_for_end(fleet, batch.id)
    lines = _file_lines(fleet.client, batch.output_file_id)
    _no_error_lines(fleet, batch)
    assert_batch_accounted(empty_postgres_url, batch, requests, lines)  # each custom_id once, usage = lines
    assert _num_result_files(fleet) == 1
    shards = watch.snapshot()
    assert len(shards) == 3 and all(s.status == "done" for s in shards.values())
    assert shards[caught.shard_index].attempts == caught.attempt + 1
    assert "Traceback" not in survivor.output, survivor.output


def test_a_worker_stalled_past_its_lease_and_resumed_records_nothing_twice(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    fleet = _start_fleet(tmp_path, empty_postgres_url, redis_url, queue, service_checkpoint, request)
    requests = _shard_lines(num_shards=6)
    batch = _submit(fleet.client, requests)
    watch = _watch(fleet, batch.id, request)
    caught = _wait_for_a_worker_mid_shard(fleet, watch, batch.id)
    stalled = caught.worker

    stopped = Fault.now()
    os.killpg(stalled.process.pid, signal.SIGSTOP)  # a stall: a long GC pause, a frozen VM, swapping
    _assert_still_mid_shard(fleet, watch, batch.id, caught)
    _assert_taken_over_in_time("SIGSTOP", _wait_for_takeover(fleet, watch, caught, stopped), fleet)
    os.killpg(stalled.process.pid, signal.SIGCONT)  # it resumes mid-shard, under a lease it lost

    batch = _wait_for_end(fleet, batch.id)
    lines = _file_lines(fleet.client, batch.output_file_id)
    _no_error_lines(fleet, batch)
    assert_batch_accounted(empty_postgres_url, batch, requests, lines)
    assert _num_result_files(fleet) == 1  # ended once
    # The resumed worker learnt it lost the shard, stopped it without an error, and carries on.
    wait_until(
        lambda: f"shard {caught.shard_index} of batch {batch.id}: the batch is" in stalled.output,
        timeout_s=10 * LEASE_S,
        processes=fleet.live_processes(),
        what="the resumed worker to give up its shard",
    )
    assert stalled.is_running()
    for worker in fleet.workers:
        assert "Traceback" not in worker.output, worker.output


@pytest.mark.parametrize("cancel_at", ["before the takeover", "once taken over"])
def test_a_cancel_during_a_takeover_ends_the_batch_cancelled_with_every_request_once(
    cancel_at: str,
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    fleet = _start_fleet(tmp_path, empty_postgres_url, redis_url, queue, service_checkpoint, request)
    requests = _shard_lines(num_shards=8)
    batch = _submit(fleet.client, requests)
    watch = _watch(fleet, batch.id, request)
    caught = _wait_for_a_worker_mid_shard(fleet, watch, batch.id)

    killed = Fault.now()
    caught.worker.kill()
    _assert_still_mid_shard(fleet, watch, batch.id, caught)
    if cancel_at == "once taken over":
        takeover = _wait_for_takeover(fleet, watch, caught, killed)
        _assert_taken_over_in_time("SIGKILL, then a cancel", takeover, fleet)
    cancelled_at = time.monotonic()
    assert fleet.client.batches.cancel(batch.id).status in ("cancelling", "cancelled")

    batch = _wait_for_end(fleet, batch.id)
    ended_after_s = time.monotonic() - cancelled_at
    print(f"\ncancelled {cancel_at}: the batch ended {ended_after_s:.2f} s after the cancel")
    assert batch.status == "cancelled", batch
    # A running shard sees the cancel within 0.5 s and its worker ends the batch (no lease to wait out).
    assert ended_after_s <= CANCEL_BOUND_S
    output_lines = _file_lines(fleet.client, batch.output_file_id)
    error_lines = _file_lines(fleet.client, batch.error_file_id)
    assert_ended_batch_accounted(empty_postgres_url, batch, requests, output_lines, error_lines)
    assert output_lines and error_lines, "the cancel landed after the batch had finished"
    assert {line["error"]["code"] for line in error_lines} == {"batch_cancelled"}
    assert all(line["response"] is None for line in error_lines)
    assert _num_result_files(fleet) == 2  # ended once: one output, one error file
    # Nothing is recorded after the end: the shards still running saw the cancel and stopped.
    time.sleep(2 * LEASE_S)
    assert len(_recorded_ids(fleet, batch.id)) == len(requests)
    assert_ended_batch_accounted(
        empty_postgres_url, fleet.client.batches.retrieve(batch.id), requests, output_lines, error_lines
    )


# -- the API killed mid-upload ----------------------------------------------------------------

BOUNDARY = "hybatch-fault-boundary"
UPLOAD_LINES = 150_000  # 40 MB: storing and checking it takes seconds, long enough to be caught at it


def test_a_worker_that_cannot_load_its_engine_hands_its_shard_over_and_exits(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    queue: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    # Both workers on one disk cache directory (a misconfiguration: it is one worker's): whichever
    # loads its engine second cannot, and must neither fail the batch nor take more shards.
    fleet = _start_fleet(
        tmp_path, empty_postgres_url, redis_url, queue, service_checkpoint, request, disk_cache_gb="0.05"
    )
    requests = _shard_lines(num_shards=3)
    batch_id = _submit(fleet.client, requests).id
    wait_until(  # one worker is expected to exit: watch only the API
        lambda: fleet.client.batches.retrieve(batch_id).status in TERMINAL_STATUSES,
        timeout_s=BATCH_TIMEOUT_S,
        processes=[fleet.api],
        what=f"batch {batch_id} to end",
    )
    batch = fleet.client.batches.retrieve(batch_id)

    lines = _file_lines(fleet.client, batch.output_file_id)
    _no_error_lines(fleet, batch)
    assert_batch_accounted(empty_postgres_url, batch, requests, lines)
    stopped = [worker for worker in fleet.workers if not worker.is_running()]
    assert len(stopped) == 1, [worker.output for worker in fleet.workers]
    [worker] = stopped
    assert worker.process.returncode == 70, worker.output  # EX_SOFTWARE: for a supervisor to see
    assert "this worker cannot load its engine (CacheDirectoryInUse" in worker.output
    assert "is back on the queue for the other workers" in worker.output


def _multipart_upload(port: int, key: str, content: bytes) -> tuple[bytes, bytes]:
    """The HTTP request head and multipart body of ``POST /v1/files`` with ``content`` as the file."""
    body = b"".join(
        [
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'.encode(),
            b"Content-Type: application/jsonl\r\n\r\n",
            content,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _partials(files_dir: Path) -> list[Path]:
    return sorted(files_dir.glob(".*.partial"))


def test_an_api_killed_mid_upload_leaves_no_file_and_its_restart_sweeps_the_partial(
    tmp_path: Path,
    empty_postgres_url: str,
    redis_url: str,
    service_checkpoint: Path,
    request: pytest.FixtureRequest,
) -> None:
    upgrade_to_head(empty_postgres_url)
    key = new_api_key(empty_postgres_url, "faults")
    data_dir = tmp_path / "data"
    settings = {
        "database_url": empty_postgres_url,
        "broker_url": redis_url,  # nothing is enqueued
        "partial_max_age_s": "1",  # the start-up sweep removes uploads idle for longer
        "partial_sweep_interval_s": "0",  # only the start-up sweep
    }
    port = free_port()
    env = service_env(data_dir=data_dir, port=port, model=service_checkpoint, queue="unused", **settings)
    api = _start_api(env, request)
    files_dir = data_dir / "files"
    line = json.dumps(_shard_lines(1)[1]).encode() + b"\n"
    head, body = _multipart_upload(port, key, line * UPLOAD_LINES)

    # One upload still sending its body, one whose body is in and is being stored.
    sending = socket.create_connection(("127.0.0.1", port))
    request.addfinalizer(sending.close)
    sending.sendall(head + body[: len(body) // 3])
    storing = socket.create_connection(("127.0.0.1", port))
    request.addfinalizer(storing.close)
    storing.sendall(head + body)
    wait_until(lambda: _partials(files_dir), timeout_s=30, processes=[api], what="the upload to be stored")
    api.kill()
    [partial] = _partials(files_dir)  # the killed upload's bytes, invisible under their temporary name

    time.sleep(max(0.0, partial.stat().st_mtime + 1.5 - time.time()))  # idle past partial_max_age_s
    port = free_port()
    env = service_env(data_dir=data_dir, port=port, model=service_checkpoint, queue="unused", **settings)
    _start_api(env, request)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)

    assert _partials(files_dir) == [], "the start-up sweep left a killed upload behind"
    assert client.files.list().data == []
    assert [path.name for path in files_dir.iterdir()] == []

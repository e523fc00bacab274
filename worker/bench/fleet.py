"""`hybatch bench fleet`: one batch on one and on two workers, a worker killed mid-batch, a 50,000-line cancel.

Real processes on Postgres + Redis (`hybatch api` and `hybatch worker` as an operator starts them, in
a fresh Postgres schema that is dropped afterwards), driven with the official openai SDK:

1. **Throughput.** The same shared-prefix batch (groups of requests under one long prefix, token-id
   prompts on ``/v1/completions``) on 1 worker, then on 2 fresh workers: the ratio of the times from
   ``in_progress`` to ``completed`` (goal >= 1.8x), and prompt tokens computed / the theoretical
   minimum (every distinct prefix computed once; goal <= 1.10) with sharding on 2 workers.
2. **Takeover.** Two workers, a short lease; once a shard runs on the first worker, SIGKILL its
   process group: the time until another worker holds that shard's lease (goal: two lease periods,
   plus what the survivor needs to finish the shard it is on), and the batch's lines checked.
3. **A 50,000-line batch.** Time from ``in_progress`` to the first recorded request (goal < 10 s),
   then a cancel and the time until ``cancelled`` (goal < 5 s), every line accounted for; the
   worker's peak resident memory.
4. **Cache affinity.** Two batches of one account on two workers, each prefix one shard: the first
   over N prefixes, the second over half of them (seeded) with new questions: the fraction of the
   second batch's prompt tokens served from a cache, with shards routed by affinity
   (``worker.affinity``) and all on the shared queue. ``--shared-cache``: instead, both runs on the
   shared queue, without and with the shared KV tier (``HYBATCH_SHARED_CACHE_DIR``, one directory
   both workers use): prompt tokens computed over the two batches.

Each worker runs one torch thread (``OMP_NUM_THREADS=1``), so on a 2-core machine two workers get a
core each; on a GPU host start one worker per GPU instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.bench.e2e import _prompt_material, build_prompts, distinct_prefix_tokens
from worker.bench.service import REPO_ROOT, ServiceProcess, api_is_healthy, free_port

DEFAULT_MODEL = REPO_ROOT / "worker" / "model" / "checkpoints" / "hybatch-tiny"
STARTUP_TIMEOUT_S = 120
_ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Fleet:
    base_url: str
    api_key: str
    database_url: str
    env: dict[str, str]
    api: ServiceProcess
    workers: list[ServiceProcess]


@contextlib.contextmanager
def _fresh_schema(server_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    from hybatch.migrate import upgrade_to_head

    schema = f"hybatch_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(server_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in server_url else "?"
    url = f"{server_url}{separator}options=-csearch_path%3D{schema}"
    try:
        upgrade_to_head(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _api_key(database_url: str) -> str:
    from hybatch import accounts
    from hybatch.db import make_engine, make_session_factory, unit_of_work

    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            account = accounts.create_account(session, f"bench-{secrets.token_hex(3)}")
            return accounts.create_api_key(session, account.id).secret
    finally:
        engine.dispose()


@contextlib.contextmanager
def fleet(args: argparse.Namespace, num_workers: int, data_dir: Path, **settings: str) -> Iterator[Fleet]:
    """``hybatch api`` and ``num_workers`` workers on one fresh schema and queue; all stopped on exit."""
    with _fresh_schema(args.database_url) as database_url:
        port = free_port()
        queue = f"hybatch-bench-{secrets.token_hex(4)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYBATCH_")}
        env |= {
            "HYBATCH_DATA_DIR": str(data_dir),
            "HYBATCH_DATABASE_URL": database_url,
            "HYBATCH_BROKER_URL": args.broker_url,
            "HYBATCH_TASK_QUEUE": queue,
            "HYBATCH_PORT": str(port),
            "HYBATCH_MODEL": str(args.model),
            "HYBATCH_DEVICE": "cpu",
            "HYBATCH_KV_CACHE_GB": "0.25",
            "HYBATCH_HOST_CACHE_GB": "0",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        env |= {f"HYBATCH_{name.upper()}": str(value) for name, value in settings.items()}
        api = ServiceProcess(["api"], env)
        # Each worker its own disk cache tier, as on separate machines (a directory is one worker's).
        workers = [
            ServiceProcess(["worker"], env | {"HYBATCH_DISK_CACHE_DIR": str(data_dir / f"kv_cache_{i}")})
            for i in range(num_workers)
        ]
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not (api_is_healthy(base_url) and all(w.worker_ready for w in workers)):
                for process in (api, *workers):
                    process.check_running()
                if time.monotonic() > deadline:
                    logs = "\n".join(process.output[-2000:] for process in (api, *workers))
                    raise RuntimeError(f"the API and the workers did not start:\n{logs}")
                time.sleep(0.2)
            yield Fleet(base_url, _api_key(database_url), database_url, env, api, workers)
        finally:
            for process in (*workers, api):
                process.stop()
            _drop_queue(args.broker_url, queue)


def _drop_queue(broker_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.delete(queue, f"_kombu.binding.{queue}")
    finally:
        client.close()


def _client(running: Fleet):
    from openai import OpenAI

    return OpenAI(base_url=f"{running.base_url}/v1", api_key=running.api_key, max_retries=2, timeout=60)


def _lines(prompts: list[list[int]], model: str, max_tokens: int) -> bytes:
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    return "".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": body | {"prompt": p},
            }
        )
        + "\n"
        for i, p in enumerate(prompts)
    ).encode()


def _submit(client, content: bytes):
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h")


def _wait(client, batch_id: str, done, *, timeout_s: float, running: Fleet, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        running.api.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} still {batch.status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _check_lines(client, batch, num_requests: int) -> str:
    """'ok' when every request has exactly one line; otherwise what is wrong."""
    ids: list[str] = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            ids += [json.loads(line)["custom_id"] for line in client.files.content(file_id).text.splitlines()]
    lost = num_requests - len(set(ids))
    duplicated = len(ids) - len(set(ids))
    return "ok" if not lost and not duplicated else f"{lost} lost, {duplicated} duplicated"


def _shared_prefix_prompts(args: argparse.Namespace) -> list[list[int]]:
    stream, leads = _prompt_material(args.model, 1)
    num_requests = args.groups * args.per_group
    prompts = build_prompts(
        stream, leads * num_requests, args.groups, args.prefix_tokens, args.question_tokens
    )
    # Group members adjacent in the tree, interleaved in the file (the planner and the cut find them).
    return prompts


def measure_throughput(args: argparse.Namespace, data_dir: Path, num_workers: int) -> dict:
    prompts = _shared_prefix_prompts(args)
    with fleet(
        args, num_workers, data_dir / f"w{num_workers}", shard_requests=args.shard_requests
    ) as running:
        client = _client(running)
        batch = _submit(client, _lines(prompts, args.model_name, args.max_tokens))
        batch = _wait(client, batch.id, lambda b: b.status != "validating", timeout_s=600, running=running)
        started_s = time.monotonic()
        # Polled 4 times a second: the API's work for each poll takes CPU from the workers.
        batch = _wait(
            client, batch.id, lambda b: b.status in _ENDED, timeout_s=3600, running=running, poll_s=0.25
        )
        seconds = time.monotonic() - started_s
        if batch.status != "completed":
            raise RuntimeError(f"the batch ended {batch.status}: {batch.errors}")
        check = _check_lines(client, batch, len(prompts))
    usage = batch.usage
    computed = usage.input_tokens - usage.input_tokens_details.cached_tokens
    return {
        "workers": num_workers,
        "status": batch.status,
        "seconds": seconds,
        "computed_tokens": computed,
        "minimum_tokens": distinct_prefix_tokens(prompts),
        "lines": check,
    }


def measure_takeover(args: argparse.Namespace, data_dir: Path) -> dict:
    import sqlalchemy as sa

    prompts = _shared_prefix_prompts(args)
    with fleet(
        args, 2, data_dir / "takeover", shard_requests=args.shard_requests, lease_s=args.lease_s
    ) as running:
        client = _client(running)
        batch = _submit(client, _lines(prompts, args.model_name, args.max_tokens))
        engine = sa.create_engine(running.database_url)
        victim = running.workers[0]
        owner_of_victim = f":{victim.process.pid}:"
        try:
            shard_index = _wait_for_shard_of(engine, batch.id, owner_of_victim, running)
            killed_at = time.monotonic()
            victim.kill()
            takeover = _wait_taken_over(engine, batch.id, shard_index, owner_of_victim, killed_at)
        finally:
            engine.dispose()
        batch = _wait(client, batch.id, lambda b: b.status in _ENDED, timeout_s=3600, running=running)
        check = _check_lines(client, batch, len(prompts))
    if batch.status != "completed":
        raise RuntimeError(f"the batch ended {batch.status}: {batch.errors}")
    return {"lease_s": args.lease_s, **takeover, "status": batch.status, "lines": check}


def _wait_for_shard_of(engine, batch_id: str, owner_part: str, running: Fleet) -> int:
    import sqlalchemy as sa

    query = sa.text(
        "SELECT shard_index FROM batch_shards WHERE batch_id = :b AND status = 'running' AND lease_owner LIKE :o"
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            row = connection.execute(query, {"b": batch_id, "o": f"%{owner_part}%"}).first()
        if row is not None:
            time.sleep(0.5)  # let it record a request or two first
            return row[0]
        with engine.connect() as connection:
            status = connection.execute(
                sa.text("SELECT status FROM batches WHERE id = :b"), {"b": batch_id}
            ).scalar()
        if status not in ("validating", "in_progress"):
            raise RuntimeError(
                f"the batch was {status} before a shard ran on the first worker: make it bigger"
            )
        running.api.check_running()
        time.sleep(0.05)
    raise RuntimeError("no shard ran on the first worker")


def _wait_taken_over(engine, batch_id: str, shard_index: int, owner_part: str, since: float) -> dict:
    """Seconds from ``since`` until the shard's task was sent again and until another worker took it."""
    import sqlalchemy as sa

    query = sa.text(
        "SELECT status, lease_owner, published_at FROM batch_shards WHERE batch_id = :b AND shard_index = :i"
    )
    with engine.connect() as connection:
        first_published = connection.execute(query, {"b": batch_id, "i": shard_index}).one()[2]
    resent_after_s = None
    deadline = since + 600
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            status, owner, published = connection.execute(query, {"b": batch_id, "i": shard_index}).one()
        if resent_after_s is None and published != first_published:
            resent_after_s = time.monotonic() - since
        if status == "done" or (status == "running" and owner and owner_part not in owner):
            return {"resent_after_s": resent_after_s, "taken_over_after_s": time.monotonic() - since}
        time.sleep(0.02)
    raise RuntimeError("the killed worker's shard was never taken over")


def measure_affinity(
    args: argparse.Namespace, data_dir: Path, *, affinity: bool, shared_tier: bool = False
) -> dict:
    """Two batches over the same prefixes (new questions in the second) on two workers: how much of
    the second batch's prompt hits a cache, with shards routed by affinity or all on the shared queue,
    and (``shared_tier``) the shared KV tier on."""
    stream, leads = _prompt_material(args.model, 1)
    groups, per_group = args.affinity_groups, args.affinity_per_group
    num_requests, shared = groups * per_group, 1 + args.prefix_tokens  # the lead token and the prefix
    first = build_prompts(stream, leads * num_requests, groups, args.prefix_tokens, args.question_tokens)
    # A later batch over half of those prefixes (drawn with a fixed seed), with other questions (the
    # text after the first batch's): the same prefixes, at other places in the queue's order.
    offset = groups * args.prefix_tokens + num_requests * args.question_tokens
    if len(stream) < offset + num_requests * args.question_tokens:
        raise ValueError("the prompt text is too short for these sizes")
    chosen = set(random.Random(args.affinity_seed).sample(range(groups), max(1, groups // 2)))
    second = [
        prompt[:shared] + stream[offset + i * args.question_tokens : offset + (i + 1) * args.question_tokens]
        for i, prompt in enumerate(first)
        if i % groups in chosen
    ]
    run_dir = data_dir / f"affinity-{'on' if affinity else 'off'}-shared-{'on' if shared_tier else 'off'}"
    tier = {"shared_cache_dir": str(run_dir / "shared_kv")} if shared_tier else {}
    with fleet(
        args,
        2,
        run_dir,
        shard_requests=per_group,  # one shard per prefix: each is the head of its subtree
        shard_affinity="true" if affinity else "false",
        **tier,
    ) as running:
        client = _client(running)
        batches = []
        for prompts in (first, second):
            batch = _submit(client, _lines(prompts, args.model_name, args.max_tokens))
            batch = _wait(
                client, batch.id, lambda b: b.status in _ENDED, timeout_s=3600, running=running, poll_s=0.25
            )
            if batch.status != "completed":
                raise RuntimeError(f"the batch ended {batch.status}: {batch.errors}")
            batches.append(batch)
    later = batches[1].usage
    cached = later.input_tokens_details.cached_tokens
    return {
        "affinity": affinity,
        "shared_tier": shared_tier,
        "computed_tokens": sum(
            b.usage.input_tokens - b.usage.input_tokens_details.cached_tokens for b in batches
        ),
        "prompt_tokens": later.input_tokens,
        "cached_tokens": cached,
        "hit_fraction": cached / later.input_tokens,
        "shared_prefix_fraction": len(second) * shared / later.input_tokens,
    }


def measure_big_cancel(args: argparse.Namespace, data_dir: Path) -> dict:
    stream, leads = _prompt_material(args.model, 1)
    prompts = [[leads[0], *stream[i % 2000 : i % 2000 + 16]] for i in range(args.big_lines)]
    with fleet(args, 1, data_dir / "big", shard_requests=args.shard_requests) as running:
        client = _client(running)
        created_at = time.monotonic()
        batch = _submit(client, _lines(prompts, args.model_name, 8))
        batch = _wait(client, batch.id, lambda b: b.status != "validating", timeout_s=900, running=running)
        in_progress_at = time.monotonic()
        batch = _wait(
            client, batch.id, lambda b: b.request_counts.completed >= 1, timeout_s=300, running=running
        )
        first_result_s = time.monotonic() - in_progress_at
        cancel_at = time.monotonic()
        client.batches.cancel(batch.id)
        batch = _wait(client, batch.id, lambda b: b.status == "cancelled", timeout_s=600, running=running)
        cancelled_s = time.monotonic() - cancel_at
        check = _check_lines(client, batch, len(prompts))
        peak_mb = _peak_rss_mb(running.workers[0].process.pid)
    return {
        "lines": args.big_lines,
        "validating_s": in_progress_at - created_at,
        "first_result_s": first_result_s,
        "cancelled_s": cancelled_s,
        "completed_before_cancel": batch.request_counts.completed,
        "accounted": check,
        "worker_peak_rss_mb": peak_mb,
    }


def _peak_rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="hybatch bench fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", required=True, help="Postgres server URL (a fresh schema is made in it)"
    )
    parser.add_argument("--broker-url", required=True, help="Redis URL for the workers' queue")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint directory")
    parser.add_argument("--groups", type=int, default=4, help="shared prefixes in the throughput batch")
    parser.add_argument("--per-group", type=int, default=48, help="requests under each prefix")
    parser.add_argument("--prefix-tokens", type=int, default=512, help="length of each shared prefix")
    parser.add_argument("--question-tokens", type=int, default=24, help="unique tokens after the prefix")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens generated per request")
    parser.add_argument("--shard-requests", type=int, default=24, help="HYBATCH_SHARD_REQUESTS for the runs")
    parser.add_argument("--lease-s", type=float, default=5.0, help="HYBATCH_LEASE_S for the takeover run")
    parser.add_argument("--big-lines", type=int, default=50_000, help="lines of the cancelled batch")
    parser.add_argument("--affinity-groups", type=int, default=8, help="prefixes in the affinity batches")
    parser.add_argument("--affinity-per-group", type=int, default=4, help="requests per prefix in each")
    parser.add_argument("--affinity-seed", type=int, default=7, help="which prefixes the later batch repeats")
    parser.add_argument(
        "--shared-cache",
        action="store_true",
        help="affinity part: shards on the shared queue, the shared KV tier off vs on",
    )
    parser.add_argument(
        "--only",
        choices=("throughput", "takeover", "cancel", "affinity"),
        action="append",
        help="run only these parts",
    )
    args = parser.parse_args(argv)
    args.model_name = args.model.name
    parts = args.only or ["throughput", "takeover", "cancel", "affinity"]
    results: dict = {}
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hybatch-bench-fleet-") as tmp:
        data_dir = Path(tmp)
        if "throughput" in parts:
            one = measure_throughput(args, data_dir, 1)
            two = measure_throughput(args, data_dir, 2)
            results["throughput"] = {"one": one, "two": two}
            print(_throughput_report(one, two), flush=True)
        if "takeover" in parts:
            results["takeover"] = measure_takeover(args, data_dir)
            t = results["takeover"]
            print(
                f"takeover: SIGKILL -> its shard sent again after {t['resent_after_s'] or float('nan'):.1f} s "
                f"(bound: 2 leases = {2 * t['lease_s']:.0f} s), taken by the other worker after "
                f"{t['taken_over_after_s']:.1f} s (once it finished its own shard); batch {t['status']}, "
                f"lines {t['lines']}",
                flush=True,
            )
        if "cancel" in parts:
            results["cancel"] = c = measure_big_cancel(args, data_dir)
            print(
                f"{c['lines']:,}-line batch: validating {c['validating_s']:.1f} s; first result "
                f"{c['first_result_s']:.1f} s after in_progress (goal < 10 s); cancelled "
                f"{c['cancelled_s']:.1f} s after the cancel call (goal < 5 s); {c['completed_before_cancel']} "
                f"completed before it; lines {c['accounted']}; worker peak RSS {c['worker_peak_rss_mb']:.0f} MB",
                flush=True,
            )
        if "affinity" in parts and args.shared_cache:
            off = measure_affinity(args, data_dir, affinity=False, shared_tier=False)
            on = measure_affinity(args, data_dir, affinity=False, shared_tier=True)
            results["shared_tier"] = {"off": off, "on": on}
            print(_shared_tier_report(off, on), flush=True)
        elif "affinity" in parts:
            off = measure_affinity(args, data_dir, affinity=False)
            on = measure_affinity(args, data_dir, affinity=True)
            results["affinity"] = {"off": off, "on": on}
            print(_affinity_report(off, on), flush=True)
    return results


def _affinity_report(off: dict, on: dict) -> str:
    rows = [
        "second batch over the first batch's prefixes, 2 workers:",
        f"{'affinity':>8} {'prompt':>8} {'cached':>8} {'hit':>6} {'of shared':>9}",
        *(
            f"{'on' if r['affinity'] else 'off':>8} {r['prompt_tokens']:>8} {r['cached_tokens']:>8} "
            f"{r['hit_fraction']:>6.3f} {r['hit_fraction'] / r['shared_prefix_fraction']:>9.3f}"
            for r in (off, on)
        ),
        f"hit fraction with affinity / without: {on['hit_fraction'] / max(off['hit_fraction'], 1e-9):.2f}x",
    ]
    return "\n".join(rows)


def _shared_tier_report(off: dict, on: dict) -> str:
    rows = [
        "two batches over the same prefixes, 2 workers, shards on the shared queue:",
        f"{'shared tier':>11} {'computed':>9} {'2nd prompt':>10} {'2nd cached':>10} {'of shared':>9}",
        *(
            f"{'on' if r['shared_tier'] else 'off':>11} {r['computed_tokens']:>9} {r['prompt_tokens']:>10} "
            f"{r['cached_tokens']:>10} {r['hit_fraction'] / r['shared_prefix_fraction']:>9.3f}"
            for r in (off, on)
        ),
        f"prompt tokens computed with the shared tier / without: "
        f"{on['computed_tokens'] / max(off['computed_tokens'], 1):.3f}",
    ]
    return "\n".join(rows)


def _throughput_report(one: dict, two: dict) -> str:
    ratio = one["seconds"] / two["seconds"] if one["seconds"] and two["seconds"] else float("nan")
    rows = [
        f"{'workers':>7} {'seconds':>8} {'computed':>9} {'minimum':>8} {'ratio':>6} lines",
        *(
            f"{r['workers']:>7} {r['seconds']:>8.1f} {r['computed_tokens']:>9} {r['minimum_tokens']:>8} "
            f"{r['computed_tokens'] / r['minimum_tokens']:>6.3f} {r['lines']}"
            for r in (one, two)
        ),
        f"2 workers vs 1: {ratio:.2f}x faster (goal >= 1.8x); computed / minimum on 2 workers "
        f"{two['computed_tokens'] / two['minimum_tokens']:.3f} (goal <= 1.10)",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()

"""The ``hybatch`` command line: migrate, manage accounts and keys, run the API and workers.

The API, worker and billing packages are imported lazily inside the commands that need
them, so ``hybatch`` itself depends on none of them (see the import contracts).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer

from hybatch import accounts, quotas, webhooks
from hybatch.db import make_engine, make_session_factory, unit_of_work
from hybatch.errors import HybatchError
from hybatch.migrate import upgrade_to_head
from hybatch.models import WebhookEndpoint
from hybatch.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="hybatch: OpenAI-compatible batch inference with billing.")
accounts_app = typer.Typer(no_args_is_help=True, help="Manage accounts.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
quotas_app = typer.Typer(no_args_is_help=True, help="Enqueued-token quotas per account and model.")
webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints for batch events.")
billing_app = typer.Typer(
    no_args_is_help=True, help="Billing: monthly close, exports, price schedules, Stripe."
)
schedules_app = typer.Typer(no_args_is_help=True, help="Price schedules: load versions, assign to accounts.")
credits_app = typer.Typer(no_args_is_help=True, help="Prepaid credit: grants per account and the balance.")
limits_app = typer.Typer(no_args_is_help=True, help="Monthly spend limits per account and per API key.")
bench_app = typer.Typer(
    no_args_is_help=True,
    help="Benchmarks, each against a peer measured in the same run; `hybatch bench NAME --help` for options.",
)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(quotas_app, name="quotas")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(billing_app, name="billing")
billing_app.add_typer(schedules_app, name="schedules")
app.add_typer(credits_app, name="credits")
app.add_typer(limits_app, name="limits")
app.add_typer(bench_app, name="bench")

CELERY_APP_MODULE = "worker.celery_app"
WORKER_STOP_TIMEOUT_S = 30
UVICORN_STARTUP_FAILURE = 3  # the exit code of `uvicorn` when the server did not start


@dataclass(frozen=True)
class Benchmark:
    """A ``hybatch bench NAME``: the module whose ``main(argv)`` runs it, and one line for the list."""

    module: str
    summary: str


# Benchmarks live beside what they measure and run with only torch (+ triton, transformers) installed;
# the CLI loads them by module name so the core never imports the engine or the kernels. Each parses
# its own options (argparse), so `hybatch bench NAME --help` is the module's own help.
BENCHMARKS = {
    "engine": Benchmark("worker.bench.engine", "This engine vs transformers generate() on the same prompts."),
    "cache": Benchmark("worker.bench.cache", "Prefix cache: capacity, shared-prefix hits, tiers, eviction."),
    "cache-trace": Benchmark(
        "worker.bench.cache_trace", "Hits across batches vs vLLM/SGLang policies, equal memory."
    ),
    "kernels": Benchmark("kernels.bench", "Triton attention kernels vs FlexAttention and SDPA (GPU)."),
    "e2e": Benchmark("worker.bench.e2e", "The whole service: a shared-prefix batch vs the same unshared."),
    "dashboard": Benchmark(
        "api.dashboard.bench", "Usage page first paint with a month of data vs the JSON API."
    ),
    "fleet": Benchmark("worker.bench.fleet", "1 vs 2 workers, a SIGKILLed worker, a 50,000-line cancel."),
    "api": Benchmark("api.bench_load", "API req/s, errors, p99 at 10 to 1,000 clients vs 10 clients."),
    "prefill": Benchmark(
        "worker.bench.prefill", "Prefill: 10 full + 60 SWA layers vs 70 and 10 full layers."
    ),
}


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _session_factory(settings: Settings):
    return make_session_factory(make_engine(settings.database_url))


@app.command()
def migrate() -> None:
    """Upgrade the database at HYBATCH_DATABASE_URL to the newest schema."""
    settings = Settings()
    upgrade_to_head(settings.database_url)
    typer.echo(f"database at {settings.database_url} is up to date")


@accounts_app.command("create")
def accounts_create(name: str) -> None:
    """Create an account."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            account = accounts.create_account(session, name)
    except HybatchError as error:
        raise _fail(error.message) from error
    typer.echo(f"created account {account.name} ({account.id})")


@accounts_app.command("sample")
def accounts_sample(
    name: str,
    requests: Annotated[int, typer.Option(help="sample requests to record")] = 10_000,
    days: Annotated[int, typer.Option(help="spread over the last this many days")] = 30,
) -> None:
    """Create a new account with sample usage (finished batches, billed requests) to try the dashboard."""
    from billing import commands

    _echo_lines(lambda: commands.sample_account(Settings(), name, requests, days))


@keys_app.command("create")
def keys_create(account: Annotated[str, typer.Option(help="account name")]) -> None:
    """Create an API key and print it; it is shown this once only."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            new_key = accounts.create_api_key(session, accounts.get_account(session, account).id)
    except HybatchError as error:
        raise _fail(error.message) from error
    typer.echo(new_key.secret)


@webhooks_app.command("create")
def webhooks_create(
    account: Annotated[str, typer.Option(help="account name")],
    url: Annotated[str, typer.Option(help="http(s) URL that receives the events")],
    events: Annotated[
        str | None, typer.Option(help="comma-separated event types (default: all batch events)")
    ] = None,
) -> None:
    """Register a webhook endpoint and print its whsec_ signing secret (shown this once only)."""
    settings = Settings()
    event_types = None if events is None else [event.strip() for event in events.split(",") if event.strip()]
    try:
        with unit_of_work(_session_factory(settings)) as session:
            account_id = accounts.get_account(session, account).id
            endpoint, secret = webhooks.create_endpoint(
                session,
                account_id,
                url=url,
                event_types=event_types,
                name=None,
                allow_private=settings.webhook_allow_private,
            )
    except HybatchError as error:
        raise _fail(error.message) from error
    typer.echo(f"{endpoint.id}  {endpoint.url}  {','.join(endpoint.event_types)}")
    typer.echo(secret)


@webhooks_app.command("list")
def webhooks_list(account: Annotated[str, typer.Option(help="account name")]) -> None:
    """An account's webhook endpoints, with their latest delivery."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            account_id = accounts.get_account(session, account).id
            page = webhooks.list_endpoints(session, account_id, after=None, limit=100)
            for endpoint in page.items:
                recent = webhooks.recent_deliveries(session, endpoint.id, limit=1)
                last = "no deliveries yet"
                if recent:
                    delivery = recent[0]
                    state = (
                        "delivered"
                        if delivery.delivered_at
                        else "gave up"
                        if delivery.gave_up_at
                        else "pending"
                    )
                    last = f"last {delivery.event_type} {state} after {delivery.attempts} attempt(s)"
                typer.echo(f"{endpoint.id}  {endpoint.url}  {','.join(endpoint.event_types)}  {last}")
    except HybatchError as error:
        raise _fail(error.message) from error


@webhooks_app.command("delete")
def webhooks_delete(endpoint_id: str) -> None:
    """Stop sending to the webhook endpoint ENDPOINT_ID."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            account_id = session.scalar(
                sa.select(WebhookEndpoint.account_id).where(WebhookEndpoint.id == endpoint_id)
            )
            webhooks.delete_endpoint(session, account_id or "", endpoint_id)
    except HybatchError as error:
        raise _fail(error.message) from error
    typer.echo(f"deleted {endpoint_id}")


@quotas_app.command("set")
def quotas_set(
    account: Annotated[str, typer.Option(help="account name")],
    tokens: Annotated[
        int | None, typer.Option(help="prompt tokens it may have enqueued; omit for the default")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model (default: the served model)")] = None,
) -> None:
    """Give an account its own enqueued-token limit for a model (without --tokens: back to the default)."""
    settings = Settings()
    try:
        with unit_of_work(_session_factory(settings)) as session:
            account_id = accounts.get_account(session, account).id
            quotas.set_token_limit(session, account_id, model or settings.model_name, tokens)
    except HybatchError as error:
        raise _fail(error.message) from error
    limit = "the default" if tokens is None else f"{tokens:,} prompt tokens"
    typer.echo(f"{account}: enqueued-token limit for {model or settings.model_name} is {limit}")


@quotas_app.command("show")
def quotas_show(
    account: Annotated[str, typer.Option(help="account name")],
    model: Annotated[str | None, typer.Option(help="model (default: the served model)")] = None,
) -> None:
    """An account's enqueued-token limit for a model and what its unfinished batches hold."""
    settings = Settings()
    try:
        with unit_of_work(_session_factory(settings)) as session:
            account_id = accounts.get_account(session, account).id
            state = quotas.quota_state(
                session, account_id, model or settings.model_name, settings.enqueued_token_limit
            )
    except HybatchError as error:
        raise _fail(error.message) from error
    limit = "no limit" if state.limit is None else f"limit {state.limit:,}"
    typer.echo(f"{state.model}: {state.enqueued:,} prompt tokens enqueued, {limit}")


@keys_app.command("list")
def keys_list(account: Annotated[str, typer.Option(help="account name")]) -> None:
    """List an account's keys by visible prefix (the secrets are not stored)."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            keys = accounts.list_api_keys(session, accounts.get_account(session, account).id)
    except HybatchError as error:
        raise _fail(error.message) from error
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        typer.echo(f"{key.prefix}...  created {key.created_at:%Y-%m-%d %H:%M}  {state}")


@keys_app.command("revoke")
def keys_revoke(prefix: str) -> None:
    """Revoke the key whose visible prefix is PREFIX."""
    try:
        with unit_of_work(_session_factory(Settings())) as session:
            key = accounts.revoke_api_key(session, prefix.removesuffix("..."))
    except HybatchError as error:
        raise _fail(error.message) from error
    typer.echo(f"revoked {key.prefix}...")


def _echo_lines(produce: Callable[[], list[str]]) -> None:
    try:
        lines = produce()
    except HybatchError as error:
        raise _fail(error.message) from error
    for line in lines:
        typer.echo(line)


@billing_app.command("close")
def billing_close(
    period: Annotated[str | None, typer.Option(help="YYYY-MM; default: every period that is due")] = None,
) -> None:
    """Close a month: one finalized invoice per account with usage. A second run changes nothing."""
    from billing import commands

    _echo_lines(lambda: commands.close(Settings(), period))


@billing_app.command("export")
def billing_export(
    period: Annotated[str, typer.Option(help="a closed period, YYYY-MM")],
    account: Annotated[str | None, typer.Option(help="only this account (name)")] = None,
    format: Annotated[str, typer.Option(help="csv or json")] = "csv",  # noqa: A002 - the option's name
    output: Annotated[str | None, typer.Option(help="write to this file instead of stdout")] = None,
) -> None:
    """Export a closed period: a row per invoice line and per priced request."""
    from billing import commands

    try:
        chunks = commands.export(Settings(), period, account, format)
        if output is None:
            for chunk in chunks:
                sys.stdout.write(chunk)
        else:
            with open(output, "w", encoding="utf-8", newline="") as target:
                target.writelines(chunks)
    except HybatchError as error:
        raise _fail(error.message) from error


@billing_app.command("pdf")
def billing_pdf(
    period: Annotated[str, typer.Option(help="a closed period, YYYY-MM")],
    account: Annotated[
        str | None, typer.Option(help="account name; default: every invoice of the period")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="the PDF (with --account), else a folder; default: invoice-PERIOD-ACCOUNT-ID.pdf here"
        ),
    ] = None,
) -> None:
    """Write a closed month's invoices (or one account's) as PDFs to send (HYBATCH_INVOICE_ISSUER heads them)."""
    from billing import commands

    _echo_lines(lambda: commands.invoice_pdf(Settings(), period, account, out))


@billing_app.command("serving-cost")
def billing_serving_cost(
    inputs: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON of measured figures; default: the shipped measured_serving.yaml"),
    ] = None,
    gpu_hourly: Annotated[str | None, typer.Option(help="price of one GPU (serving unit) per hour")] = None,
    utilization: Annotated[str | None, typer.Option(help="share of paid hours spent serving, (0, 1]")] = None,
    prefill_tps: Annotated[str | None, typer.Option(help="prompt tokens computed per second")] = None,
    decode_tps: Annotated[str | None, typer.Option(help="output tokens generated per second")] = None,
    hit_tps: Annotated[
        str | None, typer.Option(help="cached tokens served per second: device=N,host=N,disk=N")
    ] = None,
    hit_shares: Annotated[
        str | None, typer.Option(help="share of hits per tier: device=0.9,host=0.08,disk=0.02")
    ] = None,
    hardware: Annotated[str | None, typer.Option(help="what the figures were measured on")] = None,
    currency: Annotated[str | None, typer.Option(help="of the hourly price; must be the schedule's")] = None,
    account: Annotated[
        str | None, typer.Option(help="price by this account's schedule; default: the default one")
    ] = None,
    model: Annotated[str | None, typer.Option(help="default: the served model (HYBATCH_MODEL_NAME)")] = None,
) -> None:
    """What a cache-miss input, a cache-hit input and an output token cost to serve per 1M tokens, and
    the margin of the price schedule in force against them. Figures not given come from the file."""
    from billing import commands

    given = {
        "hourly_price": gpu_hourly,
        "utilization": utilization,
        "prefill_tokens_per_s": prefill_tps,
        "decode_tokens_per_s": decode_tps,
        "cache_hit_tokens_per_s": hit_tps,
        "cache_hit_shares": hit_shares,
        "hardware": hardware,
        "currency": currency,
    }
    options = {key: value for key, value in given.items() if value is not None}
    _echo_lines(lambda: commands.serving_cost(Settings(), inputs, options, account, model))


@billing_app.command("credit-note")
def billing_credit_note(
    invoice: Annotated[str, typer.Option(help="the invoice's id (inv_...)")],
    reason: Annotated[str, typer.Option(help="why, as the customer will read it")],
    line: Annotated[list[str], typer.Option(help="N (all that line has left) or N:AMOUNT; repeat")],
) -> None:
    """Correct an issued invoice with a credit note (invoices are never edited)."""
    from billing import commands

    _echo_lines(lambda: commands.credit_note(Settings(), invoice, reason, line))


@billing_app.command("stripe-push")
def billing_stripe_push(
    period: Annotated[str | None, typer.Option(help="YYYY-MM; default: all")] = None,
) -> None:
    """Push finalized invoices to Stripe (HYBATCH_STRIPE_API_KEY); safe to repeat."""
    from billing import commands

    _echo_lines(lambda: commands.stripe_push(Settings(), period))


@schedules_app.command("load")
def schedules_load(file: str) -> None:
    """Validate a schedule file (YAML or JSON) and load its new versions."""
    from billing import commands

    _echo_lines(lambda: commands.load_schedules(Settings(), Path(file)))


@schedules_app.command("assign")
def schedules_assign(
    account: Annotated[str, typer.Option(help="account name")],
    schedule: Annotated[str, typer.Option(help="schedule name")],
    effective_from: Annotated[
        str | None, typer.Option(help="ISO date-time (UTC if no zone); default now")
    ] = None,
) -> None:
    """Price an account by a schedule from a moment on."""
    from billing import commands

    _echo_lines(lambda: [commands.assign(Settings(), account, schedule, effective_from)])


@schedules_app.command("list")
def schedules_list() -> None:
    """List the loaded schedule versions."""
    from billing import commands

    _echo_lines(lambda: commands.list_schedules(Settings()))


@credits_app.command("grant")
def credits_grant(
    account: Annotated[str, typer.Option(help="account name")],
    amount: Annotated[str, typer.Option(help="major units, e.g. 10.00")],
    expires: Annotated[str | None, typer.Option(help="YYYY-MM-DD: usable through that UTC day")] = None,
    priority: Annotated[int, typer.Option(help="lower is drawn first")] = 0,
    currency: Annotated[str | None, typer.Option(help="default: the account's")] = None,
) -> None:
    """Grant prepaid credit; the account then runs only what its balance covers."""
    from billing.credits import commands

    _echo_lines(lambda: commands.grant(Settings(), account, amount, expires, priority, currency))


@limits_app.command("set")
def limits_set(
    account: Annotated[str, typer.Option(help="account name")],
    soft: Annotated[
        str | None, typer.Option(help="alert at this month's spend (major units); none: no soft")
    ] = None,
    hard: Annotated[
        str | None, typer.Option(help="stop at this month's spend (major units); none: no hard")
    ] = None,
    key: Annotated[str | None, typer.Option(help="the limit of this API key (its prefix) instead")] = None,
) -> None:
    """Set monthly spend limits: soft raises an alert, hard refuses new batches and stops admitting."""
    from billing.limits import commands

    _echo_lines(lambda: commands.set_limits(Settings(), account, key, soft, hard))


@limits_app.command("show")
def limits_show(account: Annotated[str, typer.Option(help="account name")]) -> None:
    """Show the account's spend limits with this month's spend."""
    from billing.limits import commands

    _echo_lines(lambda: commands.show_limits(Settings(), account))


@credits_app.command("balance")
def credits_balance(account: Annotated[str, typer.Option(help="account name")]) -> None:
    """Show the account's credit balance and its grants in draw order."""
    from billing.credits import commands

    _echo_lines(lambda: commands.balance(Settings(), account))


def _add_benchmark(name: str, benchmark: Benchmark) -> None:
    # Every argument after NAME, --help included, goes to the benchmark's own parser.
    @bench_app.command(
        name,
        help=benchmark.summary,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def run_benchmark(ctx: typer.Context) -> None:
        status = importlib.import_module(benchmark.module).main(list(ctx.args))
        if isinstance(status, int) and status != 0:
            raise typer.Exit(code=status)


for _name, _benchmark in BENCHMARKS.items():
    _add_benchmark(_name, _benchmark)


@app.command()
def quantize(
    src: Annotated[Path, typer.Argument(help="a float (bf16/fp16/fp32) MiMo-V2 checkpoint directory")],
    dst: Annotated[Path, typer.Argument(help="a new directory for the FP8 checkpoint")],
    skip: Annotated[
        list[str] | None, typer.Option(help="module-name substring to leave unquantized (repeatable)")
    ] = None,
) -> None:
    """Write SRC as a block-FP8 checkpoint (e4m3, 128x128 scales, the MiMo-V2-Flash format) in DST."""
    from worker.model.config import CheckpointError
    from worker.model.quantize import quantize_checkpoint

    try:
        report = quantize_checkpoint(src, dst, skip=tuple(skip or ()))
    except CheckpointError as error:
        raise _fail(str(error)) from error
    typer.echo(
        f"{dst}: {report.num_converted} tensors quantized, {report.num_copied} copied, "
        f"{report.bytes_before / 1e6:,.1f} MB -> {report.bytes_after / 1e6:,.1f} MB"
    )


@app.command()
def dequantize(
    src: Annotated[Path, typer.Argument(help="a block-FP8 MiMo-V2 checkpoint directory")],
    dst: Annotated[Path, typer.Argument(help="a new directory for the float checkpoint")],
    dtype: Annotated[str, typer.Option(help="bfloat16, float16 or float32")] = "bfloat16",
) -> None:
    """Write the FP8 checkpoint SRC with every weight dequantized to DTYPE in DST (the reverse of quantize)."""
    from worker.model.config import CheckpointError
    from worker.model.loader import parse_dtype
    from worker.model.quantize import dequantize_checkpoint

    try:
        report = dequantize_checkpoint(src, dst, dtype=parse_dtype(dtype))
    except CheckpointError as error:
        raise _fail(str(error)) from error
    typer.echo(
        f"{dst}: {report.num_converted} tensors dequantized to {dtype}, {report.num_copied} copied, "
        f"{report.bytes_before / 1e6:,.1f} MB -> {report.bytes_after / 1e6:,.1f} MB"
    )


@app.command()
def api() -> None:
    """Serve the HTTP API on HYBATCH_HOST:HYBATCH_PORT (no worker)."""
    _serve_api(Settings())


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
    tensor_parallel: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="run one engine over this many GPUs of the node (default: HYBATCH_TENSOR_PARALLEL, 1)",
        ),
    ] = None,
    expert_parallel: Annotated[
        bool | None,
        typer.Option(
            "--expert-parallel/--no-expert-parallel",
            help="spread the MoE experts over those GPUs (default: HYBATCH_EXPERT_PARALLEL, off)",
        ),
    ] = None,
) -> None:
    """Run one Celery worker process (one per GPU, or one per node with --tensor-parallel N): solo
    pool, one task at a time."""
    from hybatch.worker_registry import this_worker

    # The worker's tasks read their settings from the environment (worker.tasks), so the options
    # override the variables there, before anything reads them.
    if tensor_parallel is not None:
        os.environ["HYBATCH_TENSOR_PARALLEL"] = str(tensor_parallel)
    if expert_parallel is not None:
        os.environ["HYBATCH_EXPERT_PARALLEL"] = "true" if expert_parallel else "false"
    get_settings.cache_clear()
    try:
        settings = Settings()
    except ValueError as error:  # pydantic's ValidationError: say which setting, without a traceback
        raise _fail(str(error)) from error
    celery_app = _load_celery_app()
    celery_app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--prefetch-multiplier=1",
            # Workers share nothing through Celery (batches are coordinated in the database), so
            # skip the start-up handshake and the chatter between workers.
            "--without-mingle",
            "--without-gossip",
            # The shared queue, and this worker's own (cache affinity: hybatch.worker_registry).
            f"--queues={settings.task_queue},{this_worker(settings).queue}",
            f"--loglevel={loglevel}",
        ]
    )
    # Celery drops the exit code of a worker that stopped itself (worker_main returns None), and a
    # supervisor must see why (70: it cannot load its engine, or the engine failed, e.g. a rank died:
    # worker.tasks.hand_over). It is the code the worker's shutdown flag was set to; 0 (or unset) for
    # a signal or a clean stop.
    from celery.worker import state as worker_state

    exit_code = worker_state.should_stop
    if isinstance(exit_code, int) and not isinstance(exit_code, bool) and exit_code:
        raise typer.Exit(code=exit_code)


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "info",
) -> None:
    """Run Celery beat: it queues the monthly close (billing.close_previous_month) every hour. Run one."""
    settings = Settings()
    celery_app = _load_celery_app()
    celery_app.start(
        [
            "beat",
            # When each entry last ran; losing it with a new container only shifts the hourly runs.
            f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
            f"--loglevel={loglevel}",
        ]
    )


@app.command()
def up(
    with_worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="also start one worker process")
    ] = True,
) -> None:
    """Migrate, make sure the default account exists, then run the API and one worker."""
    settings = Settings()
    if with_worker:
        _require_celery_app_module()  # fail early and clearly, before anything changes
    upgrade_to_head(settings.database_url)
    _ensure_default_account(settings)
    worker_process = WorkerProcess([sys.executable, "-m", "hybatch", "worker"]) if with_worker else None
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again; turn that into
    # an exception so the worker is stopped (it puts an unfinished batch back on the queue) first.
    previous_handler = signal.signal(signal.SIGTERM, _raise_stop_requested)
    try:
        _serve_api(settings, on_stop_signal=worker_process.expect_exit if worker_process else None)
    except (_StopRequested, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if worker_process is not None:
            worker_process.stop()
    if worker_process is not None and worker_process.died.is_set():
        raise typer.Exit(code=1)


class _StopRequested(Exception):
    """``hybatch up`` was asked to stop (SIGTERM)."""


def _raise_stop_requested(_signum: int, _frame: object) -> None:
    raise _StopRequested


def _ensure_default_account(settings: Settings) -> None:
    with unit_of_work(_session_factory(settings)) as session:
        if accounts.find_account(session, settings.default_account) is not None:
            return
        account = accounts.create_account(session, settings.default_account)
        new_key = accounts.create_api_key(session, account.id)
    typer.echo(f"created account {settings.default_account!r}; its API key (shown once):")
    typer.secho(f"    {new_key.secret}", bold=True)


def _serve_api(settings: Settings, on_stop_signal: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; ``on_stop_signal`` is called as soon as one arrives."""
    import uvicorn

    from api.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            if on_stop_signal is not None:
                on_stop_signal()
            super().handle_exit(sig, frame)

    app = create_app(settings)
    typer.echo(f"dashboard: http://{settings.host}:{settings.port}/dashboard (sign in with an API key)")
    server = Server(uvicorn.Config(app, host=settings.host, port=settings.port))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises a SIGINT again once it has stopped
        server.run()
    if not server.started:  # e.g. the port is taken; uvicorn has said why
        raise typer.Exit(code=UVICORN_STARTUP_FAILURE)


def _require_celery_app_module() -> None:
    if importlib.util.find_spec(CELERY_APP_MODULE) is None:
        raise _fail(
            f"this checkout has no Celery worker yet ({CELERY_APP_MODULE} not found); "
            "run `hybatch up --no-worker` to serve the API alone"
        )


def _load_celery_app():
    _require_celery_app_module()
    from worker.celery_app import app as celery_app

    return celery_app


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM


class WorkerProcess:
    """One worker subprocess next to the API; if it dies on its own, ``on_death`` is called."""

    def __init__(self, command: list[str], on_death: Callable[[], None] = _stop_this_process) -> None:
        self.died = threading.Event()
        self._stopping = threading.Event()
        self._process = subprocess.Popen(command, env=os.environ.copy())
        self._on_death = on_death
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        return_code = self._process.wait()
        if not self._stopping.is_set():
            self.died.set()
            typer.secho(f"worker exited with code {return_code}; stopping", err=True, fg="red")
            self._on_death()

    def expect_exit(self) -> None:
        """From now on an exit of the worker is no death: a Ctrl-C in a terminal reaches the worker
        too, and it may finish before ``stop`` is called (while the API waits for its clients)."""
        self._stopping.set()

    def stop(self) -> None:
        """Ask the worker to finish (SIGTERM), then kill it after WORKER_STOP_TIMEOUT_S."""
        self._stopping.set()
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

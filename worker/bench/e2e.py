"""``hybatch bench e2e``: the whole service end to end, a shared-prefix batch vs the same batch unshared.

Starts ``hybatch up`` (embedded: SQLite, the SQLite broker, one worker) on a fresh temporary data dir
and a free port, takes the API key it prints on first start, and drives it with the official ``openai``
SDK: upload a JSONL file, create the batch, poll it, download the output. After a one-request warm-up
(the worker loads the model on its first batch), two batches run on the same service:

- **shared**: ``--requests`` ``/v1/completions`` requests over ``--groups`` prefixes of
  ``--prefix-tokens`` tokens (Python standard-library source, encoded with the served model's
  tokenizer), each with its own ``--question-tokens`` tail, interleaved across the groups;
- **unique**, the peer: the same prompts, each starting with a different token, so nothing is shared.

Prompts are token ids so the counts are exact. For each batch it prints wall time (create → completed
as the client sees it, polling every 0.1 s, so it includes the broker's pickup latency), requests/s,
output tokens/s, prompt, cached and computed tokens, the hit fraction and the cost (the sum of the
lines' ``x_billing`` amounts); then checks that the batch's ``usage``, ``GET /v1/usage`` grouped by
batch, and every line's ``x_billing`` token classes agree exactly with the lines' ``usage``. Exits
non-zero when a check fails. The service is always stopped.

    hybatch bench e2e                                   # defaults: about a minute on 2 CPU cores
    hybatch bench e2e --requests 256 --groups 8 --prefix-tokens 2048 --max-tokens 32
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

from worker.bench.service import embedded_service
from worker.bench.workloads import DEFAULT_CHECKPOINT, special_token_ids

POLL_INTERVAL_S = 0.1
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
# Prompt text: standard-library source (what the default model was trained on), read at run time.
SOURCE_MODULES = ("difflib", "argparse", "textwrap", "calendar", "fractions", "heapq", "bisect")


@dataclass(frozen=True)
class BatchRun:
    """One batch as the client saw it: wall time and the token and cost totals of its output lines."""

    name: str
    num_requests: int
    wall_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    minimum_tokens: int  # prompt tokens that must be computed: each distinct prefix once
    cost: Decimal  # sum of the lines' x_billing amounts, unrounded, major units
    currency: str | None
    problems: tuple[str, ...]  # every disagreement the usage check found; empty = passed

    @property
    def computed_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def hit_fraction(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def build_prompts(
    stream: list[int], lead_ids: list[int], num_groups: int, prefix_tokens: int, question_tokens: int
) -> list[list[int]]:
    """Prompt i = [lead_ids[i]] + the prefix of group i % num_groups + question i.

    ``stream`` is cut as [prefix 0 | prefix 1 | ... | question 0 | question 1 | ...].
    """
    needed = num_groups * prefix_tokens + len(lead_ids) * question_tokens
    if len(stream) < needed:
        raise ValueError(f"the prompt text has {len(stream)} tokens; these sizes need {needed}")
    prefixes = [stream[g * prefix_tokens : (g + 1) * prefix_tokens] for g in range(num_groups)]
    questions = stream[num_groups * prefix_tokens :]
    return [
        [lead, *prefixes[i % num_groups], *questions[i * question_tokens : (i + 1) * question_tokens]]
        for i, lead in enumerate(lead_ids)
    ]


def distinct_prefix_tokens(prompts: list[list[int]]) -> int:
    """Tokens in the trie of ``prompts``: what must be computed at least once, every prefix shared."""
    ordered = sorted(prompts)
    shared = sum(_common_prefix_len(a, b) for a, b in pairwise(ordered))
    return sum(map(len, ordered)) - shared


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _prompt_material(model_dir: Path, num_leads: int) -> tuple[list[int], list[int]]:
    """(the source text as the model's tokens, ``num_leads`` distinct ordinary token ids)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = "\n\n".join(inspect.getsource(__import__(name)) for name in SOURCE_MODULES)
    special = special_token_ids(model_dir)
    ordinary = [t for t in range(tokenizer.get_vocab_size()) if t not in special]
    if len(ordinary) < num_leads:
        raise ValueError(f"the tokenizer has {len(ordinary)} ordinary tokens; {num_leads} are needed")
    return tokenizer.encode(text, add_special_tokens=False).ids, ordinary[:num_leads]


def _request_lines(prompts: list[list[int]], model: str, max_tokens: int) -> list[dict]:
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    return [
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions", "body": body | {"prompt": p}}
        for i, p in enumerate(prompts)
    ]


def run_batch(client, service, name: str, requests: list[dict], started_at: int) -> BatchRun:
    """Upload, create, poll until it ends, download; then check the usage against the output lines.

    ``service`` is the ``ServiceProcess`` (polling fails fast if it dies); ``started_at`` (unix
    seconds) is where the ``GET /v1/usage`` query starts.
    """
    content = "".join(json.dumps(line) + "\n" for line in requests).encode()
    upload = client.files.create(file=(f"{name}.jsonl", content), purpose="batch")
    start = time.perf_counter()
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    while batch.status not in TERMINAL_STATUSES:
        service.check_running()
        time.sleep(POLL_INTERVAL_S)
        batch = client.batches.retrieve(batch.id)
    wall_s = time.perf_counter() - start
    if batch.status != "completed" or not batch.output_file_id:
        raise RuntimeError(f"batch {name} ended {batch.status}: {batch.errors}")
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]

    problems: list[str] = []
    if sorted(line["custom_id"] for line in lines) != sorted(r["custom_id"] for r in requests):
        problems.append("the output's custom_ids differ from the requests'")
    totals = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0}
    cost, currencies = Decimal(0), set()
    for line in lines:
        usage = _line_usage(line, problems)
        if usage is None:
            continue
        totals["input_tokens"] += usage["prompt_tokens"]
        totals["cached_tokens"] += usage["prompt_tokens_details"]["cached_tokens"]
        totals["output_tokens"] += usage["completion_tokens"]
        if "x_billing" in line:
            cost += Decimal(line["x_billing"]["amount"])
            currencies.add(line["x_billing"]["currency"])
    if batch.usage is None:
        problems.append("the batch has no usage")
    else:
        batch_usage = {
            "input_tokens": batch.usage.input_tokens,
            "cached_tokens": batch.usage.input_tokens_details.cached_tokens,
            "output_tokens": batch.usage.output_tokens,
        }
        if batch_usage != totals:
            problems.append(f"the batch's usage {batch_usage} != the output lines' {totals}")
    problems += _usage_endpoint_problems(client, batch.id, started_at, totals, len(requests), cost)
    return BatchRun(
        name=name,
        num_requests=len(requests),
        wall_s=wall_s,
        prompt_tokens=totals["input_tokens"],
        cached_tokens=totals["cached_tokens"],
        output_tokens=totals["output_tokens"],
        minimum_tokens=distinct_prefix_tokens([r["body"]["prompt"] for r in requests]),
        cost=cost,
        currency=",".join(sorted(currencies)) or None,
        problems=tuple(problems),
    )


def _line_usage(line: dict, problems: list[str]) -> dict | None:
    """The ``usage`` of a successful line, after checking it against the line's ``x_billing``."""
    custom_id, response = line["custom_id"], line.get("response") or {}
    if line.get("error") or response.get("status_code") != 200:
        problems.append(f"{custom_id}: not a success: {line.get('error')}")
        return None
    usage = response["body"]["usage"]
    prompt, hit = usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]
    if not 0 <= hit <= prompt:
        problems.append(f"{custom_id}: cached_tokens {hit} not within prompt_tokens {prompt}")
    classes = {"cache_hit_input": hit, "cache_miss_input": prompt - hit, "output": usage["completion_tokens"]}
    if "x_billing" not in line:
        problems.append(f"{custom_id}: no x_billing")
    elif line["x_billing"]["token_classes"] != classes:
        problems.append(f"{custom_id}: x_billing {line['x_billing']['token_classes']} != usage {classes}")
    return usage


def _usage_endpoint_problems(client, batch_id, started_at, totals, num_requests, cost) -> list[str]:
    """``GET /v1/usage`` grouped by batch must report exactly the lines' tokens, requests and cost."""
    params = {"start_time": started_at, "bucket_width": "1d", "group_by": "batch", "limit": 1}
    page = client.get("/usage", cast_to=object, options={"params": params})
    results = [r for bucket in page["data"] for r in bucket["results"] if r["batch"] == batch_id]
    if len(results) != 1:
        return [f"GET /v1/usage has {len(results)} results for batch {batch_id}, not 1"]
    [result] = results
    reported = {
        "input_tokens": result["input_tokens"],
        "cached_tokens": result["input_cached_tokens"],
        "output_tokens": result["output_tokens"],
    }
    problems = []
    if reported != totals:
        problems.append(f"GET /v1/usage {reported} != the output lines' {totals}")
    if result["num_model_requests"] != num_requests:
        problems.append(f"GET /v1/usage counts {result['num_model_requests']} requests, not {num_requests}")
    if Decimal(result["amount"]["value"]) != cost:
        problems.append(f"GET /v1/usage amount {result['amount']['value']} != the x_billing sum {cost}")
    return problems


# (label, value of a run, format, whether the last column shows unique ÷ shared)
_ROWS = (
    ("wall time (s)", lambda r: r.wall_s, "{:.2f}", True),
    ("requests/s", lambda r: r.num_requests / r.wall_s, "{:.2f}", False),
    ("output tokens/s", lambda r: r.output_tokens / r.wall_s, "{:.1f}", False),
    ("prompt tokens", lambda r: r.prompt_tokens, "{:,}", False),
    ("cached tokens", lambda r: r.cached_tokens, "{:,}", False),
    ("hit fraction", lambda r: r.hit_fraction, "{:.3f}", False),
    ("computed prompt tokens", lambda r: r.computed_tokens, "{:,}", True),
    ("  ÷ theoretical minimum", lambda r: r.computed_tokens / r.minimum_tokens, "{:.3f}", False),
    ("output tokens", lambda r: r.output_tokens, "{:,}", False),
    ("cost", lambda r: r.cost, "{}", True),
)


def format_table(shared: BatchRun, unique: BatchRun) -> str:
    rows = [("", "shared prefix", "unique prompts", "unique ÷ shared")]
    for label, value, fmt, with_ratio in _ROWS:
        a, b = value(shared), value(unique)
        ratio = f"{b / a:.2f}x" if with_ratio and a else ""
        label = f"cost ({shared.currency})" if label == "cost" else label
        rows.append((label, fmt.format(a), fmt.format(b), ratio))
    rows.append(("usage check", *(_verdict(run) for run in (shared, unique)), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"usage check ({run.name}): {p}" for run in (shared, unique) for p in run.problems]
    return "\n".join(lines)


def _verdict(run: BatchRun) -> str:
    return "passed" if not run.problems else f"FAILED ({len(run.problems)})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="hybatch bench e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_model = Path(os.environ.get("HYBATCH_MODEL", DEFAULT_CHECKPOINT))
    parser.add_argument("--model", type=Path, default=default_model, help="checkpoint the service serves")
    parser.add_argument(
        "--device", default=os.environ.get("HYBATCH_DEVICE", "auto"), help="auto, cpu or cuda (the service's)"
    )
    parser.add_argument("--kv-cache-gb", type=float, default=1.0, help="the service's device KV cache, GB")
    parser.add_argument("--requests", type=int, default=128, help="requests per batch")
    parser.add_argument("--groups", type=int, default=8, help="distinct shared prefixes in the shared batch")
    parser.add_argument("--prefix-tokens", type=int, default=1024, help="tokens per shared prefix")
    parser.add_argument("--question-tokens", type=int, default=32, help="tokens of each request's own tail")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the service")
    args = parser.parse_args(argv)
    if not 1 <= args.groups <= args.requests:
        parser.error("--groups must be between 1 and --requests")

    stream, leads = _prompt_material(args.model, 2 + args.requests)
    # Shared prompts all start with leads[0]; the warm-up takes leads[1]; the peer's prompts the rest.
    shared_prompts = build_prompts(
        stream, [leads[0]] * args.requests, args.groups, args.prefix_tokens, args.question_tokens
    )
    unique_prompts = [[lead, *prompt[1:]] for lead, prompt in zip(leads[2:], shared_prompts, strict=True)]
    print(
        f"workload: {args.requests} /v1/completions requests over {args.groups} prefixes of "
        f"{args.prefix_tokens} tokens + {args.question_tokens}-token tails, max_tokens {args.max_tokens}, "
        f"temperature 0; model {args.model.name}, device {args.device}"
    )
    from openai import OpenAI

    settings = {"MODEL": str(args.model), "DEVICE": args.device, "KV_CACHE_GB": str(args.kv_cache_gb)}
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    started_at = int(time.time()) - 1
    with embedded_service(settings, threads) as service:
        client = OpenAI(base_url=f"{service.base_url}/v1", api_key=service.api_key, max_retries=0)
        model = client.models.list().data[0].id
        warm_up = _request_lines([[leads[1], *shared_prompts[0][1:9]]], model, 2)
        run_batch(client, service.process, "warm-up", warm_up, started_at)
        runs = [
            run_batch(
                client, service.process, name, _request_lines(prompts, model, args.max_tokens), started_at
            )
            for name, prompts in (("shared", shared_prompts), ("unique", unique_prompts))
        ]
    shared, unique = runs
    print(format_table(shared, unique))
    result = {
        "shared": shared,
        "unique": unique,
        "wall_ratio": unique.wall_s / shared.wall_s,
        "computed_ratio": unique.computed_tokens / shared.computed_tokens,
        "usage_ok": not shared.problems and not unique.problems,
    }
    if not result["usage_ok"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()

"""``hybatch bench e2e``: the prompt workload, the usage check, and a tiny run of the real service."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import pytest

from tests.worker.jobs.service_checkpoint import shared_service_checkpoint
from worker.bench import e2e as bench_e2e
from worker.bench.service import embedded_service

TINY_SETTINGS = {"DEVICE": "cpu", "KV_CACHE_GB": "0.02", "HOST_CACHE_GB": "0", "DISK_CACHE_GB": "0"}


def test_prompts_share_their_group_prefix_and_differ_in_their_tails():
    stream = list(range(100, 200))
    prompts = bench_e2e.build_prompts(
        stream, [7, 7, 7, 7, 7], num_groups=2, prefix_tokens=10, question_tokens=3
    )

    assert [p[:11] for p in prompts] == [
        [7, *range(100 + 10 * (i % 2), 110 + 10 * (i % 2))] for i in range(5)
    ]
    assert [p[11:] for p in prompts] == [list(range(120 + 3 * i, 123 + 3 * i)) for i in range(5)]
    # Each prefix once (one lead token + 2 x 10), plus every tail.
    assert bench_e2e.distinct_prefix_tokens(prompts) == 1 + 2 * 10 + 5 * 3
    unique = [[lead, *p[1:]] for lead, p in zip([1, 2, 3, 4, 5], prompts, strict=True)]
    assert bench_e2e.distinct_prefix_tokens(unique) == sum(map(len, unique))


def test_too_little_prompt_text_is_refused():
    with pytest.raises(ValueError, match="need 25"):
        bench_e2e.build_prompts(list(range(20)), [0, 0, 0], num_groups=1, prefix_tokens=10, question_tokens=5)


def _line(prompt: int, cached: int, output: int, classes: dict | None = None) -> dict:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    billing = {
        "token_classes": classes
        or {"cache_hit_input": cached, "cache_miss_input": prompt - cached, "output": output},
        "amount": "0.0001",
        "currency": "usd",
    }
    return {
        "custom_id": "req-0",
        "response": {"status_code": 200, "body": {"usage": usage}},
        "error": None,
        "x_billing": billing,
    }


def test_a_line_whose_billing_disagrees_with_its_usage_is_a_problem():
    problems: list[str] = []
    assert bench_e2e._line_usage(_line(10, 4, 2), problems)["prompt_tokens"] == 10
    assert problems == []

    bench_e2e._line_usage(
        _line(10, 4, 2, {"cache_hit_input": 5, "cache_miss_input": 5, "output": 2}), problems
    )
    bench_e2e._line_usage(_line(10, 11, 2), problems)
    failed = _line(10, 4, 2) | {"error": {"code": "x", "message": "y"}, "response": None}
    assert bench_e2e._line_usage(failed, problems) is None

    assert len(problems) == 3 and "x_billing" in problems[0] and "cached_tokens 11" in problems[1]


def test_the_table_shows_ratios_and_every_problem():
    def run(name, wall_s, cached, problems=()):
        return bench_e2e.BatchRun(name, 4, wall_s, 400, cached, 8, 110, Decimal("0.001"), "usd", problems)

    table = bench_e2e.format_table(run("shared", 1.0, 300), run("unique", 3.0, 0, ("usage differs",)))

    assert "3.00x" in table  # wall time
    assert "4.00x" in table  # computed prompt tokens: 400 vs 100
    assert "FAILED (1)" in table and "usage check (unique): usage differs" in table


@pytest.mark.slow
def test_bench_e2e_runs_the_service_and_its_numbers_add_up(tmp_path_factory, capsys):
    model = shared_service_checkpoint(tmp_path_factory.getbasetemp())
    result = bench_e2e.main(
        ["--model", str(model), "--device", "cpu", "--kv-cache-gb", "0.02", "--threads", "1"]
        + ["--requests", "6", "--groups", "2", "--prefix-tokens", "64", "--question-tokens", "8"]
        + ["--max-tokens", "3"]
    )

    shared, unique = result["shared"], result["unique"]
    assert result["usage_ok"] and shared.problems == unique.problems == ()
    assert shared.prompt_tokens == unique.prompt_tokens == 6 * (1 + 64 + 8)
    for run in (shared, unique):
        assert 0 <= run.cached_tokens <= run.prompt_tokens
        assert 0 < run.output_tokens <= 6 * 3
        assert run.computed_tokens >= run.minimum_tokens
        assert run.cost > 0 and run.currency == "usd"
    assert shared.hit_fraction > 0 and shared.computed_tokens < unique.computed_tokens
    assert unique.cached_tokens == 0 and unique.computed_tokens == unique.minimum_tokens
    assert result["computed_ratio"] > 1
    out = capsys.readouterr().out
    assert "usage check" in out and "passed" in out and "FAILED" not in out


@pytest.mark.slow
def test_the_service_is_stopped_even_when_the_benchmark_fails(tmp_path_factory):
    model = shared_service_checkpoint(tmp_path_factory.getbasetemp())
    settings = TINY_SETTINGS | {"MODEL": str(model)}
    with (
        pytest.raises(RuntimeError, match="benchmark failed"),
        embedded_service(settings, {"OMP_NUM_THREADS": "1"}) as service,
    ):
        group = service.process.process.pid  # the process group of `hybatch up` and its worker
        raise RuntimeError("benchmark failed")

    assert service.process.process.poll() is not None
    deadline = time.monotonic() + 5  # the orphaned worker, if any, is reaped by init
    while _group_exists(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_exists(group)


def _group_exists(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True

"""The benchmarks run end to end on tiny shapes (their numbers are recorded in docs/performance.md)."""

import subprocess
import sys

from worker.bench import cache as bench_cache
from worker.bench import engine as bench_engine


def test_bench_engine_runs_both_peers_and_they_agree(checkpoint_factory):
    path = checkpoint_factory(sliding_window=8)
    result = bench_engine.main(
        [
            "--model",
            str(path),
            "--num-prompts",
            "3",
            "--min-len",
            "4",
            "--max-len",
            "20",
            "--new-tokens",
            "5",
            "--hf-batch-size",
            "2",
            "--kv-cache-gb",
            "0.01",
        ]
    )
    assert result["identical_continuations"] == 3
    assert result["speedup"] > 0


def test_bench_cache_reaches_the_theoretical_minimum_on_a_shared_batch(checkpoint_factory):
    path = checkpoint_factory(sliding_window=8)
    result = bench_cache.main(
        [
            "--model",
            str(path),
            "--kv-cache-gb",
            "0.01",
            "--capacity-lens",
            "64",
            "--num-requests",
            "8",
            "--num-systems",
            "2",
            "--system-len",
            "48",
            "--question-len",
            "8",
            "--unique-requests",
            "2",
            "--unique-len",
            "16",
            "--tier-prefix-len",
            "32",
            "--repeats",
            "1",
        ]
    )
    assert result["computed_over_minimum"] == 1.0
    assert result["pro_analytic_8192"] >= 6
    assert result["measured_64"] > 1


def test_analytic_multiplier_matches_a_hand_computation():
    # Pro shape at 8K: full 10*8*320*2 = 51200 B/token; SWA 60*16*320*2 = 614400 B/token;
    # one window of 128 tokens: (51200 + 614400) / (51200 + 614400 * 128 / 8192) = 665600 / 60800.
    assert abs(bench_cache.analytic_multiplier(bench_cache.PRO, 8192) - 665600 / 60800) < 1e-9


def test_cli_dispatches_to_a_benchmark():
    out = subprocess.run(
        [sys.executable, "-m", "hybatch", "bench", "cache", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "shared-prefix batch" in out.stdout

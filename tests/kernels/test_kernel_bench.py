"""The GPU benchmark script runs end to end in its CPU dry-run mode (tiny shapes, interpreter)."""

from kernels.bench import main


def test_bench_dry_run_checks_correctness_and_prints_the_table(capsys):
    assert main(["--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "correctness" in printed and "FAILED" not in printed
    for row in ("SWA prefill", "full prefill", "decode"):
        assert row in printed

"""``hybatch bench dashboard`` runs end to end on a small ledger (its timings are not checked here)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from api.dashboard import bench

pytestmark = [pytest.mark.browser, pytest.mark.dated]  # seeds the 30 days before now


def test_bench_prints_every_range_and_saves_a_screenshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path(bench.CHROMIUM).exists():
        if os.environ.get("HYBATCH_REQUIRE_SERVICES") == "1":
            pytest.fail(f"no Chromium at {bench.CHROMIUM} (HYBATCH_REQUIRE_SERVICES=1 forbids skipping)")
        pytest.skip(f"no Chromium at {bench.CHROMIUM}")
    shot = tmp_path / "usage.png"
    status = bench.main(["--requests", "300", "--repeats", "1", "--screenshot", str(shot)])
    out = capsys.readouterr().out
    assert "seeded 300 requests" in out
    for preset in ("30d", "month", "7d", "today"):
        row = re.search(
            rf"^{preset}\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)x\s+(ok|MISSED)$", out, re.M
        )
        assert row is not None, out
        assert "nan" not in (row.group(1), row.group(2))  # the browser reported its first paints
    assert status in (0, 1)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

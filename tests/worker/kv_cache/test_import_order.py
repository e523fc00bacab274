"""The cache's modules import on their own, first thing in a fresh interpreter (no import cycle)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hybatch.settings import REPO_ROOT


@pytest.mark.parametrize(
    "module", ["worker.kv_cache.prefix_cache", "worker.kv_cache.window_retention", "worker.engine.llm_engine"]
)
def test_module_imports_first(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]

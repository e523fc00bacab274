"""The suite never reads the developer's own HYBATCH_* settings (tests/conftest.py clears them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_exported_settings_do_not_reach_the_tests(tmp_path: Path) -> None:
    # What a user who followed the README's Settings table might have exported in their shell.
    env = dict(os.environ)
    env.update(
        HYBATCH_PORT="18000",
        HYBATCH_DATA_DIR=str(tmp_path / "elsewhere"),
        HYBATCH_MODEL_NAME="someone-elses-model",
        HYBATCH_DEFAULT_ACCOUNT="not-default",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/hybatch/test_cli.py",
            "tests/hybatch/test_settings.py",
            "-k",
            "up_creates_default or defaults",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "deselected" in result.stdout
    assert not (tmp_path / "elsewhere").exists()

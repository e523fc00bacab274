"""The import direction of DESIGN.md, enforced by the contracts in pyproject.toml.

The contracts are run with import-linter. A contract may name a package that a later
issue has not written yet (for example ``worker.kv_cache``); import-linter refuses to run
any contract when a source module is missing, so such names are dropped from this run
with a warning instead of silencing every other contract.
"""

import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _module_exists(dotted_name: str) -> bool:
    path = REPO_ROOT.joinpath(*dotted_name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _ini_value(value: object) -> str:
    if isinstance(value, list):
        return "".join(f"\n    {item}" for item in value)
    if isinstance(value, bool):
        return str(value)
    return str(value)


def _write_config(config_path: Path) -> list[str]:
    """Write the pyproject contracts as an import-linter INI file; return the dropped modules."""
    settings = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = settings.pop("contracts")
    dropped: list[str] = []
    lines = ["[importlinter]"]
    lines += [f"{key} = {_ini_value(value)}" for key, value in settings.items()]
    for index, contract in enumerate(contracts):
        present = [name for name in contract["source_modules"] if _module_exists(name)]
        dropped += [name for name in contract["source_modules"] if name not in present]
        if not present:
            continue
        contract = {**contract, "source_modules": present}
        lines.append(f"\n[importlinter:contract:{index}]")
        lines += [f"{key} = {_ini_value(value)}" for key, value in contract.items()]
    config_path.write_text("\n".join(lines) + "\n")
    return dropped


def test_import_contracts_hold(tmp_path: Path) -> None:
    config_path = tmp_path / "importlinter.ini"
    dropped = _write_config(config_path)
    if dropped:
        warnings.warn(f"import contracts skip modules not written yet: {dropped}", stacklevel=1)
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache", str(config_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

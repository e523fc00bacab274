"""Exactly one billing module talks to Stripe (import-linter guards the other directions)."""

from __future__ import annotations

import ast
from pathlib import Path

BILLING_DIR = Path(__file__).resolve().parents[2] / "billing"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_stripe_sync_imports_stripe() -> None:
    importers = sorted(p.name for p in BILLING_DIR.rglob("*.py") if "stripe" in _imports(p))
    assert importers == ["stripe_sync.py"]


def test_billing_imports_only_what_it_may() -> None:
    allowed = {
        "billing",
        "hybatch",
        "sqlalchemy",
        "stripe",
        "yaml",
        "fpdf",  # invoice PDFs (billing.invoicing.pdf)
        "pydantic",
        "pydantic_settings",
        "__future__",
    }
    import sys

    for path in BILLING_DIR.rglob("*.py"):
        outside = {
            name for name in _imports(path) if name not in allowed and name not in sys.stdlib_module_names
        }
        assert outside == set(), (path.name, outside)

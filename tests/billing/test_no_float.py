"""No float in money: an AST scan of billing/ for float literals, float(), math and round()."""

from __future__ import annotations

import ast
from pathlib import Path

BILLING_DIR = Path(__file__).resolve().parents[2] / "billing"


def _float_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            found.append(f"{where} float literal {node.value!r}")
        elif isinstance(node, ast.Name) and node.id in ("float", "round"):
            found.append(f"{where} uses {node.id}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            module = getattr(node, "module", None) or ""
            if "math" in names or module == "math" or "fractions" in names or module == "fractions":
                found.append(f"{where} imports math/fractions")
        elif isinstance(node, ast.Attribute) and node.attr in ("__float__", "fromhex"):
            found.append(f"{where} uses .{node.attr}")
    return found


def test_billing_never_uses_float() -> None:
    files = sorted(BILLING_DIR.rglob("*.py"))
    assert len(files) >= 5
    problems = [problem for path in files for problem in _float_uses(path)]
    assert problems == []


def test_the_scan_finds_floats(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import math\nx = 0.1\ny = float('1')\nz = round(x)\n")
    assert len(_float_uses(sample)) == 4

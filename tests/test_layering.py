"""Dependency direction: sam_engine never imports Qt or app; importing it stays light."""

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "sam_engine"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_sam_engine_imports_no_qt_and_no_app():
    offenders = {
        str(p.relative_to(ENGINE)): bad
        for p in ENGINE.rglob("*.py")
        if (bad := imported_modules(p) & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "app"})
    }
    assert offenders == {}


def test_importing_sam_engine_does_not_load_torch_or_qt():
    code = "import sys, sam_engine; print('torch' in sys.modules, 'PySide6' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

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


ROOT = ENGINE.parent
PACKAGES = ("app", "sam_engine")


def our_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            rel = p.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods[".".join(parts)] = p
    return mods


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_edges(path: Path, mods: dict[str, Path]) -> set[str]:
    """Our modules that `path` imports, at module level or lazily inside functions (blocks under
    `if TYPE_CHECKING:` excluded). `from pkg import sub` counts as an import of pkg.sub only."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if _is_type_checking(node)
               for n in ast.walk(node)}
    deps = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            deps |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            deps |= {s for s in subs if s in mods}
            if any(s not in mods for s in subs):
                deps.add(node.module)
    return {d for d in deps if d in mods}


def test_no_import_cycles_between_modules():
    mods = our_modules()
    graph = {m: import_edges(p, mods) - {m} for m, p in mods.items()}
    # every strongly connected component must be a single module (Tarjan's algorithm)
    index, low, on, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_torch_free_runtime_imports_no_torch_at_any_depth():
    mods = our_modules()
    seen, todo = set(), ["sam_engine.onnx.runtime", "sam_engine.onnx.learned_runtime",
                         "sam_engine.onnx.finder_runtime", "app.shell.line_main"]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += sorted(import_edges(mods[m], mods))
    heavy = {m: bad for m in seen
             if (bad := imported_modules(mods[m]) & {"torch", "torchvision", "segment_anything",
                                                     "PySide6", "transformers"})}
    assert heavy == {}


def test_no_private_names_used_across_modules():
    """`from our_module import _name` and `our_module._name` from another module are refused."""
    mods = our_modules()
    offenders = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in mods:
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")
                              and node.module != name]
                aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in mods}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in mods}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offenders.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    assert offenders == []

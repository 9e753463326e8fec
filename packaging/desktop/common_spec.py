# Shared body of lite.spec and full.spec: exec'd by them inside PyInstaller's spec namespace
# (Analysis, PYZ, EXE, COLLECT, SPECPATH, workpath are defined there) with FLAVOUR set.
# Not importable on its own.
import json
import sys
from pathlib import Path

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

HERE = Path(SPECPATH).resolve()  # noqa: F821 (spec namespace)
ROOT = HERE.parents[1]
WORK = Path(workpath)  # noqa: F821
WORK.mkdir(parents=True, exist_ok=True)
assert FLAVOUR in ("lite", "full"), FLAVOUR  # noqa: F821

# Only the full install needs these; the lite bundle must not even contain them (the self-test
# and tests/test_packaging.py check it).
TORCH_STACK = ["torch", "torchvision", "torchaudio", "functorch", "triton", "segment_anything",
               "mobile_sam", "timm", "onnx", "onnxscript", "sympy", "transformers", "peft",
               "tokenizers", "safetensors", "accelerate", "rouge_score", "nltk", "ray", "pyarrow",
               "pandas"]
# Pulled in by optional imports of bundled packages, used by none of our code paths (the
# self-test exercises engine, measurements, recipes, store and Qt without them).
NEVER = ["tkinter", "_tkinter", "matplotlib", "IPython", "notebook", "pytest", "_pytest",
         "psycopg", "psycopg2", "pytestqt", "PIL", "pygments", "yaml"]
# app modules that need the torch stack (report generator, ONNX export command).
LITE_SKIP_APP = ("app.report", "app.shell.commands.export_onnx")
LITE_SKIP_ENGINE = ("sam_engine.sam.", "sam_engine.encoders.", "sam_engine.weights.checkpoint",
                    "sam_engine.onnx.export", "sam_engine.onnx.graphs", "sam_engine.onnx.trace",
                    "sam_engine.classic.tuning")


def _keep(name: str) -> bool:
    if FLAVOUR == "full":  # noqa: F821
        return True
    return not name.startswith(LITE_SKIP_APP + LITE_SKIP_ENGINE)


hiddenimports = [
    *collect_submodules("app", filter=_keep),
    *collect_submodules("sam_engine", filter=_keep),
    # imported by the Alembic migration scripts, which are data files (loaded by path)
    "alembic.context", "alembic.op", "alembic.command", "alembic.script",
    "alembic.runtime.migration", "alembic.runtime.environment", "alembic.ddl.sqlite",
    "alembic.ddl.postgresql", "sqlalchemy.dialects.sqlite",
]

migrations = ROOT / "app" / "store" / "migrations"
datas = [
    *collect_data_files("sam_engine", includes=["**/*.json"]),
    (str(ROOT / "samples" / "recipes" / "demo_part.toml"), "samples/recipes"),
    *[(str(p), str(Path("app/store/migrations") / p.relative_to(migrations).parent))
      for p in sorted(migrations.rglob("*"))
      if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"],
]
flavour_file = WORK / "_bundle_flavour.txt"
flavour_file.write_text(FLAVOUR + "\n", encoding="utf-8")  # noqa: F821
datas.append((str(flavour_file), "app/shell"))

a = Analysis(  # noqa: F821
    [str(HERE / "sam_inspect_desktop.py")],
    pathex=[str(ROOT)],
    binaries=[],
    datas=datas,
    hiddenimports=hiddenimports,
    hookspath=[],
    runtime_hooks=[],
    excludes=NEVER + (TORCH_STACK if FLAVOUR == "lite" else []),  # noqa: F821
    noarchive=False,
)

# Top-level modules and binaries, for build.py's licence list.
tops = sorted({name.split(".")[0] for name, *_ in a.pure}
              | {Path(dest).parts[0] for dest, *_ in a.binaries})
(WORK / "bundle_modules.json").write_text(json.dumps(tops, indent=1), encoding="utf-8")

pyz = PYZ(a.pure)  # noqa: F821
exe = EXE(  # noqa: F821
    pyz,
    a.scripts,
    [],
    exclude_binaries=True,
    name="sam-inspect",
    debug=False,
    strip=False,
    upx=False,
    # Windows: no console window for the GUI (see README: --self-test then needs --json).
    console=not sys.platform.startswith("win"),
    icon=str(HERE / "icon.ico"),
)
coll = COLLECT(  # noqa: F821
    exe,
    a.binaries,
    a.datas,
    strip=False,
    upx=False,
    name=f"sam-inspect-{FLAVOUR}",  # noqa: F821
)

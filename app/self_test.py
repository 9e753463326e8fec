"""`sam-inspect-desktop --self-test`: check that a (frozen) install works, without a display.

Loads the engine the desktop app would use (app.engine_choice), segments the defects of a
generated part (sam_engine.synthetic) from their boxes, starts Qt offscreen, checks the GUI
module can be imported, and that a lite bundle never imported torch. Prints one line per check
and a JSON summary; exit status 0 when every check passed, 1 otherwise (the failing check's
line says what is wrong).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# A part whose three defects the default engine segments well (box IoU 0.93-0.97).
SEED, KINDS, N_DEFECTS = 7, ("inclusion", "patch", "stain", "scratch", "pit"), 3
MIN_CLASSIC_IOU = 0.5  # mean box-prompt IoU the default engine must reach on that part
RECIPE = Path(__file__).resolve().parents[1] / "samples" / "recipes" / "demo_part.toml"
HEAVY_MODULES = ("torch", "torchvision", "segment_anything", "transformers", "peft", "ray")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def _run(name: str, fn: Callable[[], str]) -> Check:
    t0 = time.perf_counter()
    try:
        detail, ok = fn(), True
    except Exception as exc:  # a self-test reports every failure and goes on
        detail, ok = f"{type(exc).__name__}: {exc}", False
        if os.environ.get("SAM_INSPECT_DEBUG"):
            traceback.print_exc()
    return Check(name, ok, detail, round(time.perf_counter() - t0, 3))


def segment_synthetic(engine_name: str, models_dir: str | None) -> str:
    """Segment each defect of a generated part from its box; the default engine must reach
    MIN_CLASSIC_IOU (SAM's quality depends on its weights: only the mask's shape is checked)."""
    from sam_engine.prompts import Prompts
    from sam_engine.synthetic import make_part

    from .engine_choice import load_desktop_engine

    engine = load_desktop_engine(engine_name, models_dir)
    part = make_part(SEED, size=(480, 640), kinds=KINDS, n_defects=N_DEFECTS)
    handle = engine.set_image(part.image)
    boxes = np.array([inst.bbox for inst in part.instances], dtype=np.float64)
    masks = engine.predict(handle, Prompts.from_boxes(boxes))
    ious = []
    for b, inst in enumerate(part.instances):
        m = masks.best(b)
        if m.shape != part.image.shape[:2] or m.dtype != bool:
            raise AssertionError(f"mask {b} has shape {m.shape} {m.dtype}, expected "
                                 f"{part.image.shape[:2]} bool")
        inter = np.count_nonzero(m & inst.mask)
        ious.append(inter / max(np.count_nonzero(m | inst.mask), 1))
    mean = float(np.mean(ious))
    desc = engine.info.describe() if hasattr(engine.info, "describe") else str(engine.info)
    if engine.info.name == "classic" and mean < MIN_CLASSIC_IOU:
        raise AssertionError(f"default engine mean IoU {mean:.3f} < {MIN_CLASSIC_IOU} ({desc})")
    return f"{desc}; {len(ious)} defects, mean box IoU {mean:.3f}"


def measure_and_store() -> str:
    """Measurements (scipy) on a generated defect, a recipe (scikit-image) parsed, and an
    inspection database created in a temp folder (SQLAlchemy + the shipped Alembic migrations)."""
    import tempfile

    from sam_engine.synthetic import make_part

    from .measure import Calibration, measure
    from .recipe import load_recipe
    from .store import InspectionStore

    part = make_part(SEED, size=(480, 640), kinds=KINDS, n_defects=N_DEFECTS)
    m = measure(part.instances[0].mask, Calibration(mm_per_px=0.05))
    recipe = load_recipe(RECIPE) if RECIPE.is_file() else None
    with tempfile.TemporaryDirectory(prefix="sam-inspect-self-test-") as tmp:
        store = InspectionStore(Path(tmp) / "self_test.db")
        store.close()
    what = ""
    if recipe is not None:
        zone_px = sum(int(z.mask(part.image.shape[:2]).sum()) for z in recipe.zones)
        what = f"recipe {recipe.name!r} parsed (zones {zone_px} px), "
    return f"defect area {m.area_px} px; {what}inspection database created and migrated"


def start_qt() -> str:
    """A QApplication (offscreen when there is no display) and a painted image."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtGui, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["sam-inspect-self-test"])
    img = QtGui.QImage(64, 64, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor("white"))
    painter = QtGui.QPainter(img)
    painter.fillRect(8, 8, 16, 16, QtGui.QColor("red"))
    painter.end()
    if QtGui.QColor(img.pixel(10, 10)).red() != 255:
        raise AssertionError("Qt painted nothing")
    return f"Qt {QtCore.qVersion()}, platform {app.platformName()}"


def import_gui() -> str:
    if importlib.util.find_spec("app.gui") is None or \
            importlib.util.find_spec("app.gui.main") is None:
        return "app.gui is not part of this build (skipped)"
    # the window's module pulls in every widget and what they use: all must be in the bundle
    names = ["app.gui.main"]
    if importlib.util.find_spec("app.gui.main_window") is not None:
        names.append("app.gui.main_window")
    for name in names:
        importlib.import_module(name)
    return f"{', '.join(names)} import"


def models_found() -> str:
    from . import paths

    status = paths.models_status()
    if not status.any:
        return "none (first-run message follows)\n" + paths.no_models_message(status)
    return (f"{len(status.checkpoints)} checkpoint(s), {len(status.onnx_exports)} ONNX export(s): "
            + ", ".join(str(p) for p in (*status.checkpoints, *status.onnx_exports)))


def heavy_modules(flavour: str, forbid: bool) -> str:
    loaded = [m for m in HEAVY_MODULES if m in sys.modules]
    if loaded and (forbid or flavour == "lite"):
        raise AssertionError(f"imported {', '.join(loaded)} although the lite flavour must not")
    return "imported: " + (", ".join(loaded) if loaded else "none of " + ", ".join(HEAVY_MODULES))


def run_self_test(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam-inspect-desktop --self-test",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="auto", help="auto, onnx, sam or classic")
    parser.add_argument("--models", default=None, help="an ONNX export folder to use")
    parser.add_argument("--no-qt", action="store_true", help="skip the Qt checks")
    parser.add_argument("--forbid-torch", action="store_true",
                        help="fail when torch (or another heavy module) was imported")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    from .about import about_info

    info = about_info()
    print(f"sam-inspect self-test: {info.name} {info.version} ({info.flavour}), git "
          f"{info.git_hash or 'unknown'}, Python {info.python}, frozen "
          f"{bool(getattr(sys, 'frozen', False))}")
    checks = [_run("models", models_found),
              _run("engine", lambda: segment_synthetic(args.engine, args.models)),
              _run("measure+store", measure_and_store)]
    if not args.no_qt:
        checks += [_run("qt", start_qt), _run("gui", import_gui)]
    checks.append(_run("heavy modules", lambda: heavy_modules(info.flavour, args.forbid_torch)))
    for c in checks:
        print(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    ok = all(c.ok for c in checks)
    summary = {"ok": ok, "flavour": info.flavour, "version": info.version,
               "git_hash": info.git_hash, "frozen": bool(getattr(sys, "frozen", False)),
               "torch_imported": "torch" in sys.modules, "checks": [asdict(c) for c in checks]}
    if args.json is not None:
        from .atomic_write import write_text

        write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print("self-test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1

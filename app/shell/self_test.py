"""`sam-inspect-desktop --self-test`: check that a (frozen) install works, without a display.

Loads the engine the desktop app would use (app.shell.engine_choice), segments the defects of a
generated part (sam_engine.synthetic.generator) from their boxes, measures a defect, parses a
recipe (the
samples' one, and one built in so a bundle without samples/ is checked too) and judges findings
with it, writes an inspection to a temp database and compares what it reads back, starts Qt
offscreen, checks the GUI module can be imported, and that a lite bundle never imported torch.
Prints one line per check and a JSON summary; exit status 0 when every check passed, 1 otherwise
(the failing check's line says what is wrong).
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
RECIPE = Path(__file__).resolve().parents[2] / "samples" / "recipes" / "demo_part.toml"
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
    from app.shell.engine_choice import load_desktop_engine
    from sam_engine.prompts import Prompts
    from sam_engine.synthetic.generator import make_part

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


# The recipe judged when samples/ (and its demo recipe) is not shipped, as in the frozen bundle.
BUILTIN_RECIPE = """
schema_version = 1

[part]
name = "self_test"
version = "1.0.0"
description = "built into app.shell.self_test: judged when samples/ is absent"

[calibration]
mm_per_px = 0.05

[[zones]]
name = "edge"
box = [0, 0, 640, 20]

[classes.scratch]
max_area_mm2 = 1.0
max_length_mm = 5.0
forbidden_zones = ["edge"]
"""


def _square(size: tuple[int, int], x: int, y: int, side: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[y:y + side, x:x + side] = True
    return mask


def _scratch(recipe, x: int, y: int, side: int):
    """A square "scratch" finding measured with the recipe's calibration."""
    from app.inspection.findings import Finding
    from app.inspection.measure import measure

    mask = _square((480, 640), x, y, side)
    return Finding("scratch", mask=mask, measurements=measure(mask, recipe.calibration),
                   score=0.9, prompts={"boxes": [[x, y, x + side, y + side]]}, source="classic")


def recipe_check(recipe_path: Path = RECIPE) -> str:
    """Parse a recipe (the samples' demo recipe, else the built-in one) and judge findings: a
    10 px square scratch (0.25 mm² at 0.05 mm/px) passes, a 40 px one (4 mm²) fails on area,
    under the built-in recipe's limits (the samples' recipe is parsed, its zones rasterised)."""
    from app.inspection import verdict
    from app.inspection.recipe import load_recipe, parse_recipe

    what = ""
    if recipe_path.is_file():
        shipped = load_recipe(recipe_path)
        zone_px = sum(int(z.mask((480, 640)).sum()) for z in shipped.zones)
        what = f"recipe {shipped.name!r} parsed (zones {zone_px} px); "
    recipe = parse_recipe(BUILTIN_RECIPE, "<built-in self-test recipe>")
    what += f"built-in recipe {recipe.name!r} parsed; "
    small = verdict.judge([_scratch(recipe, 200, 200, 10)], recipe)
    large = verdict.judge([_scratch(recipe, 300, 200, 40)], recipe)
    if not small.passed:
        raise AssertionError(f"a small scratch should PASS recipe {recipe.name!r}: "
                             + "; ".join(r.message for r in small.reasons))
    rules = sorted({r.rule for r in large.reasons})
    if large.passed or rules != ["max_area"]:
        raise AssertionError(f"a large scratch (4 mm² > 1 mm²) should FAIL on max_area only; "
                             f"got {large.status} {rules}")
    return what + "judged: small scratch PASS, large scratch FAIL (max_area)"


def database_check() -> str:
    """Create an inspection database in a temp folder (SQLAlchemy + the shipped Alembic
    migrations), write an inspection with one defect, reopen the file and compare what comes
    back: mask, measurements, class, score and verdict."""
    import tempfile

    from app.inspection import verdict
    from app.inspection.findings import Inspection
    from app.inspection.recipe import parse_recipe
    from app.store import InspectionStore

    recipe = parse_recipe(BUILTIN_RECIPE, "<built-in self-test recipe>")
    finding = _scratch(recipe, 300, 200, 40)
    written = Inspection(image_path="self-test.png", image_sha256="0" * 64, lot="self-test",
                         operator="self-test", engine="classic", recipe_name=recipe.name,
                         recipe_version=recipe.version, findings=[finding],
                         verdict=verdict.judge([finding], recipe))
    with tempfile.TemporaryDirectory(prefix="sam-inspect-self-test-") as tmp:
        db = Path(tmp) / "self_test.db"
        store = InspectionStore(db)
        try:
            ins_id = store.add_inspection(written, actor="self-test")
        finally:
            store.close()
        store = InspectionStore(db)
        try:
            n = store.count_inspections()
            back = store.get_inspection(ins_id)
        finally:
            store.close()
    if n != 1 or len(back.findings) != 1:
        raise AssertionError(f"wrote 1 inspection with 1 defect, read back {n} inspection(s) "
                             f"with {len(back.findings)} defect(s)")
    got = back.findings[0]
    if got.mask is None or not np.array_equal(got.mask, finding.mask):
        raise AssertionError("the defect mask read back differs from the one written")
    checks = {"class": (got.defect_class, finding.defect_class),
              "area_px": (got.measurements and got.measurements.area_px,
                          finding.measurements.area_px),
              "score": (got.score, finding.score),
              "verdict": (back.verdict and back.verdict.status, written.verdict.status),
              "reasons": (back.verdict and [r.rule for r in back.verdict.reasons],
                          [r.rule for r in written.verdict.reasons])}
    wrong = [f"{k}: wrote {w!r}, read {g!r}" for k, (g, w) in checks.items() if g != w]
    if wrong:
        raise AssertionError("the inspection read back differs: " + "; ".join(wrong))
    return ("inspection database created and migrated; 1 inspection with 1 defect written and "
            f"read back equal (verdict {back.verdict.status})")


def measure_defect() -> str:
    """Measurements (scipy, OpenCV) of a generated defect."""
    from app.inspection.measure import Calibration, measure
    from sam_engine.synthetic.generator import make_part

    part = make_part(SEED, size=(480, 640), kinds=KINDS, n_defects=N_DEFECTS)
    mask = part.instances[0].mask
    m = measure(mask, Calibration(mm_per_px=0.05))
    if m.area_px != int(mask.sum()):
        raise AssertionError(f"measured area {m.area_px} px != the mask's {int(mask.sum())}")
    return f"defect area {m.area_px} px, length {m.feret_max_mm:.2f} mm"


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
    from app.shell import paths

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
                        help="choose engines as the lite flavour (never torch) and fail when "
                        "torch (or another heavy module) was imported")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.forbid_torch:  # choose engines as the lite flavour does, whatever is installed
        from app.shell.engine_choice import NO_TORCH_ENV

        os.environ[NO_TORCH_ENV] = "1"

    from app.shell.about import about_info

    info = about_info()
    print(f"sam-inspect self-test: {info.name} {info.version} ({info.flavour}), git "
          f"{info.git_hash or 'unknown'}, Python {info.python}, frozen "
          f"{bool(getattr(sys, 'frozen', False))}")
    checks = [_run("models", models_found),
              _run("engine", lambda: segment_synthetic(args.engine, args.models)),
              _run("measure", measure_defect),
              _run("recipe", recipe_check),
              _run("database", database_check)]
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
        from app.outputs.atomic_write import write_text

        write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print("self-test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1

"""Make the README's window screenshots on a real X server:

    xvfb-run -a -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=xcb \
        .venv/bin/python docs/make_screenshots.py [OUT_DIR]

It opens samples/ with the demo recipe (classic engine: no model needed), marks the defects of
part_02_ceramic.png from its ground truth boxes with real mouse drags, accepts each, finishes the
image (FAIL: any crack fails the part), selects crack #1 and saves docs/images/gui_fail_part.png;
then opens Help > Keyboard shortcuts (F1) and saves docs/images/gui_shortcuts.png. Last, on
part_01_metal.png it accepts one scratch, runs Inspect > Find similar in folder (taught by that
one example), decides the first three proposals as the ground truth says (accept a proposal
touching a true scratch, reject the others) and saves docs/images/find_queue.png.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def save_small(image, path: Path, colours: int = 128) -> None:
    """Save a QImage as a palette PNG (about a third of the size; Pillow when installed)."""
    image.save(str(path))
    try:
        from PIL import Image
    except ImportError:
        return
    rgb = Image.open(path).convert("RGB")
    rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                 dither=Image.Dither.NONE).save(path, optimize=True)


def main(out_dir: Path) -> None:
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from app.gui.main_window import MainWindow
    from app.gui.options import GuiOptions
    from app.gui.settings import Settings
    from sam_engine.classic import ClassicEngine

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    samples = REPO / "samples"
    opts = GuiOptions(folder=samples, db=str(tmp / "inspections.db"), operator="inspector",
                      recipe=samples / "recipes" / "demo_part.toml", prefetch=0)
    w = MainWindow(opts, engine_factory=ClassicEngine, settings=Settings.at(tmp / "s.ini"))
    w.setGeometry(0, 0, 1440, 880)
    w.show()
    w.activateWindow()

    def wait(cond, timeout=60.0):
        end = time.time() + timeout
        while time.time() < end:
            app.processEvents()
            if cond():
                return
            time.sleep(0.01)
        raise SystemExit("timed out")

    def settle(n=20):
        for _ in range(n):
            app.processEvents()
            time.sleep(0.02)

    def drag(x0, y0, x1, y1):
        vp = w.canvas.viewport()
        a, b = w.canvas.view_pos_of(x0, y0), w.canvas.view_pos_of(x1, y1)
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
        QTest.mouseMove(vp, a + QPoint(10, 10))
        QTest.mouseMove(vp, b)
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
        wait(lambda: w.annotator.active is not None
             and w.annotator.session.candidate(w.annotator.active) is not None)

    part = samples / "part_02_ceramic.png"
    w.go_to(part)
    wait(lambda: w.annotator.prepared is not None
         and w.annotator.prepared.image.path == part)
    names = list(w.autosave.class_names)
    for d in json.loads(part.with_suffix(".json").read_text())["defects"]:
        x0, y0, x1, y1 = d["box"]
        w.panel.choose_class(names.index(d["kind"]))
        drag(max(x0 - 4, 0), max(y0 - 4, 0), min(x1 + 4, 639), min(y1 + 4, 479))
        w.accept_masks()  # Enter's action (Xvfb without a window manager gives no focus)
    w.annotator.finish("reviewed")  # the verdict, staying on the image for the picture
    w.select_defect(1)
    settle()
    save_small(w.grab().toImage(), out_dir / "gui_fail_part.png")

    sheet = w.show_shortcuts()
    sheet.resize(640, 860)
    settle()
    save_small(sheet.grab().toImage(), out_dir / "gui_shortcuts.png")
    verdict = w.annotator.inspection.verdict.status
    sheet.close()

    part = samples / "part_01_metal.png"
    w.go_to(part)
    wait(lambda: w.annotator.prepared is not None
         and w.annotator.prepared.image.path == part)
    truth = [d["box"] for d in json.loads(part.with_suffix(".json").read_text())["defects"]]
    w.panel.choose_class(names.index("scratch"))
    x0, y0, x1, y1 = truth[0]
    drag(max(x0 - 4, 0), max(y0 - 4, 0), min(x1 + 4, 639), min(y1 + 4, 479))
    w.accept_masks()
    review = w.finding.review
    w.finding.find_similar()  # Ctrl+Shift+F's action
    wait(lambda: not w.finding.runner.running, 300)

    def touches_truth(p) -> bool:
        return any(p.box[0] < b[2] and b[0] < p.box[2] and p.box[1] < b[3] and b[1] < p.box[3]
                   for b in truth)

    for _ in range(3):  # A or R, as an inspector who knows the ground truth would press
        p = review.current
        if p is None:
            break
        wait(lambda p=p: w.annotator.path == p.path and w.annotator.image is not None)
        review.accept() if touches_truth(p) else review.reject()
    if review.current is not None:
        wait(lambda: w.annotator.image is not None and w.annotator.path == review.current.path)
    settle()
    save_small(w.grab().toImage(), out_dir / "find_queue.png")
    print(json.dumps({"platform": app.platformName(), "verdict": verdict,
                      "proposals": len(review.queue.items)}))
    w.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images")

"""The real window on a real X server (Xvfb): open the sample parts, segment, accept, and save a
screenshot of the screen to tests/artifacts/gui_xvfb.png (ignored by git) for people to look at.
Skipped when Xvfb or Qt's xcb platform plugin (its system libraries) is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "tests" / "artifacts" / "gui_xvfb.png"
SCREEN = (1600, 1000)

SCRIPT = r"""
import json, sys, time
from pathlib import Path
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

app = QApplication([])
from app.gui.main_window import MainWindow
from app.gui.options import GuiOptions
from app.gui.settings import Settings
from sam_engine.classic import ClassicEngine

repo, tmp, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
samples = repo / "samples"
opts = GuiOptions(folder=samples, db=str(tmp / "inspections.db"), operator="xvfb",
                  recipe=samples / "recipes" / "demo_part.toml")
w = MainWindow(opts, engine_factory=ClassicEngine, settings=Settings.at(tmp / "s.ini"))
w.setGeometry(0, 0, 1600, 1000)
w.show()

def wait(cond, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.01)
    raise SystemExit("timed out")

def drag(x0, y0, x1, y1):
    vp = w.canvas.viewport()
    a, b = w.canvas.view_pos_of(x0, y0), w.canvas.view_pos_of(x1, y1)
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    QTest.mouseMove(vp, a + QPoint(10, 10))
    QTest.mouseMove(vp, b)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
    wait(lambda: w.annotator.session.candidate(w.annotator.active) is not None)

wait(lambda: w.annotator.prepared is not None)
w.go_to(samples / "part_02_ceramic.png")
wait(lambda: w.annotator.prepared is not None
     and w.annotator.prepared.image.path.name == "part_02_ceramic.png")
defects = json.loads((samples / "part_02_ceramic.json").read_text())["defects"]
for d in defects[:-1]:
    x0, y0, x1, y1 = d["box"]
    drag(x0 - 4, y0 - 4, x1 + 4, y1 + 4)
    w.panel.choose_class(list(w.autosave.class_names).index(d["kind"])
                         if d["kind"] in w.autosave.class_names else 0)
    w.annotator.accept()
x0, y0, x1, y1 = defects[-1]["box"]
drag(x0 - 4, y0 - 4, x1 + 4, y1 + 4)  # left live: the candidate overlay shows
wait(lambda: w.folder_list.item(5).icon().availableSizes() != [], timeout=30)
for _ in range(20):
    app.processEvents()
    time.sleep(0.02)
shot = w.screen().grabWindow(0)
shot.save(str(out))
print(json.dumps({"platform": app.platformName(), "findings": len(w.annotator.findings),
                  "width": shot.width(), "height": shot.height()}))
w.close()
"""


def _xvfb_env() -> dict[str, str]:
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "xcb"
    env["PYTHONPATH"] = str(REPO)
    return env


def _xvfb_cmd() -> list[str]:
    return ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24"]


@pytest.fixture(scope="module")
def xvfb():
    if shutil.which("xvfb-run") is None:
        pytest.skip("Xvfb (xvfb-run) is not installed")
    probe = subprocess.run(
        [*_xvfb_cmd(), sys.executable, "-c",
         "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
        env=_xvfb_env(), capture_output=True, text=True, timeout=120,
    )
    if probe.returncode != 0:
        lines = [ln for ln in probe.stderr.splitlines() if ln.strip()]
        pytest.skip("Qt's xcb platform plugin cannot start under Xvfb: "
                    + (lines[-1] if lines else f"exit code {probe.returncode}"))


def test_real_window_under_xvfb_saves_a_screenshot(xvfb, tmp_path):
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    run = subprocess.run(
        [*_xvfb_cmd(), sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path), str(ARTIFACT)],
        env=_xvfb_env(), capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["platform"] == "xcb"
    assert facts["findings"] >= 1
    assert (facts["width"], facts["height"]) == SCREEN
    import cv2

    shot = cv2.imread(str(ARTIFACT))
    assert shot is not None and shot.shape[:2] == (SCREEN[1], SCREEN[0])
    assert float(np.std(shot)) > 10  # a drawn window, not a blank screen

"""Tools > Tune on accepted defects… and Tools > Use previous model in the window (pytest-qt,
offscreen): the tune runs on a worker thread (a fake, quick one here), its progress and result
are shown, a promoted model becomes the window's engine and demoting goes back."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.gui import tune_dialog  # noqa: E402
from sam_engine.learned import registry  # noqa: E402
from tests.gui_support import (  # noqa: E402
    DEFECT,
    WAIT_MS,
    answer_question,
    drag_box,
    wait_mask,
    wait_ready,
    write_folder,
)

CLASSIC = "engine classic: classic-v1"
RECIPE = ('schema_version = 1\n[part]\nname = "site-a"\nversion = "1"\n'
          "[calibration]\nmm_per_px = 0.1\n[classes.pit]\nmax_area_mm2 = 1.0\n")


@pytest.fixture
def tuned_root(tmp_path, monkeypatch):
    root = tmp_path / "tuned"
    monkeypatch.setenv(registry.ENV_TUNED, str(root))
    return root


@pytest.fixture
def window(make_window, tmp_path, qtbot):
    """A window on two part images with recipe site-a, its engine loaded."""
    write_folder(tmp_path / "parts", n=2)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    w = make_window(tmp_path / "parts", recipe=recipe)
    wait_ready(qtbot, w)
    qtbot.waitUntil(lambda: w.engine_label.text() == CLASSIC, timeout=WAIT_MS)
    return w


@pytest.fixture
def messages(monkeypatch):
    """(title, text) of every QMessageBox.information / warning shown."""
    seen: list[tuple[str, str]] = []
    for kind in ("information", "warning"):
        monkeypatch.setattr(QMessageBox, kind,
                            lambda parent, title, text, *a, **k: seen.append((title, text)))
    return seen


def tuned_model(root, name: str, version: str):
    """A real (tiny, untrained) learned model written into the registry."""
    import torch

    from sam_engine.learned.model import CropUNet, NetConfig
    from sam_engine.learned.weights import ModelManifest, save_model

    config = NetConfig(widths=(4, 8))
    torch.manual_seed(0)
    manifest = ModelManifest(name=name, version=version, net=config.to_dict())
    folder = registry.model_dir(name, version, root)
    save_model(folder, CropUNet(config).state_dict(), manifest)
    return folder, manifest


def outcome(folder, manifest, promoted: bool, reason: str):
    from app.tuning.run import TuneOutcome
    from sam_engine.learned.heldout import HeldOut

    def held(box, point):
        return HeldOut(classes=["pit", "pit"], ious={"box": box, "point": point},
                       box_fill=[0.5, 0.5])

    return TuneOutcome(manifest, folder, held([0.5, 0.6], [0.3, 0.4]),
                       held([0.7, 0.9], [0.5, 0.7]), "learned-base", promoted, reason)


def test_the_tools_menu_holds_the_tune_actions(window, make_window, tmp_path, tuned_root):
    w = window
    tools = w.tools_menu
    assert tools.title().replace("&", "") == "Tools"
    assert w.actions_by_name["tune"] in tools.actions()
    assert w.actions_by_name["use_previous_model"] in tools.actions()
    assert w.actions_by_name["tune"].isEnabled()  # the window has a store to learn from
    assert not w.actions_by_name["use_previous_model"].isEnabled()  # nothing promoted yet
    memory = make_window(tmp_path / "parts", db="sqlite://")
    assert not memory.actions_by_name["tune"].isEnabled()  # nothing kept to learn from


def test_no_accepted_defects_says_so_and_changes_nothing(qtbot, window, messages, tuned_root):
    w = window
    w.actions_by_name["tune"].trigger()
    qtbot.waitUntil(lambda: bool(messages), timeout=WAIT_MS)
    title, text = messages[0]
    assert title == "Nothing to tune on"
    assert "no accepted defect to learn from" in text and "recipe site-a" in text
    assert w.tuning.progress_dialog is None and w.tuning.result_dialog is None
    assert w.engine_label.text() == CLASSIC
    assert w.actions_by_name["tune"].isEnabled()
    assert not tuned_root.exists() or not any(tuned_root.iterdir())


def test_the_tune_learns_from_the_recipes_accepted_defects(qtbot, window, messages,
                                                            tuned_root, monkeypatch):
    """The real store reading: the accepted defect of this recipe goes to tune(), whose
    steps reach the progress dialog; a checkpoint folder lets a cancelled tune resume."""
    import app.tuning.run

    w = window
    drag_box(qtbot, w, *DEFECT)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(w.annotator.findings) == 1, timeout=WAIT_MS)
    requests, steps = [], []

    def fake_tune(req, *, progress=True, on_step=None):
        requests.append(req)
        on_step(1, 2)
        raise RuntimeError("stop here")

    monkeypatch.setattr(app.tuning.run, "tune", fake_tune)
    w.tuning.runner.progress.connect(lambda step, total: steps.append((step, total)))
    w.actions_by_name["tune"].trigger()
    qtbot.waitUntil(lambda: bool(messages), timeout=WAIT_MS)
    assert messages[0][0] == "Tuning failed" and "stop here" in messages[0][1]
    req = requests[0]
    assert (req.recipe, req.name, req.data.n_instances) == ("site-a", "site-a", 1)
    assert req.checkpoint_dir == tuned_root / ".checkpoints"
    assert steps == [(1, 2)]


def test_tune_shows_progress_then_the_figures_and_uses_the_promoted_model(
        qtbot, window, tuned_root, monkeypatch):
    w = window
    folder, manifest = tuned_model(tuned_root, "site-a", "3")
    go_on, jobs = threading.Event(), []

    def fake_tune(job, on_step, on_phase):
        jobs.append(job)
        on_phase("measuring the engine in use…")
        for step in (1, 2):
            on_step(step, 4)
        assert go_on.wait(10)
        for step in (3, 4):
            on_step(step, 4)
        registry.promote(job.recipe, manifest, "better on the held-out images", tuned_root)
        return outcome(folder, manifest, True, "0.700 vs 0.450: +0.250, above the margin")

    monkeypatch.setattr(tune_dialog, "run_tune", fake_tune)
    try:
        w.actions_by_name["tune"].trigger()
        progress = w.tuning.progress_dialog
        assert progress.isVisible()
        qtbot.waitUntil(lambda: progress.bar.value() == 2, timeout=WAIT_MS)
        assert progress.bar.maximum() == 4
        assert progress.steps.text().startswith("step 2 / 4")
        assert not w.actions_by_name["tune"].isEnabled()  # one tune at a time
    finally:
        go_on.set()
    qtbot.waitUntil(lambda: w.tuning.result_dialog is not None, timeout=WAIT_MS)
    assert w.tuning.progress_dialog is None
    result = w.tuning.result_dialog
    assert result.figures() == [["before: learned-base", "0.550", "0.350"],
                                ["after: site-a@3", "0.800", "0.600"]]
    assert "Promoted" in result.verdict.text() and "the window uses it" in result.verdict.text()
    assert "+0.250, above the margin" in result.reason.text()
    assert (jobs[0].recipe, jobs[0].name, jobs[0].db) == ("site-a", "site-a", w.db_location)
    qtbot.waitUntil(lambda: w.engine_label.text() == "engine learned: site-a@3",
                    timeout=WAIT_MS)
    assert "learned:site-a@3" in w.engine_label.toolTip()
    assert w.autosave.engine.model_id == "site-a@3"  # new defects record the tuned model
    wait_ready(qtbot, w)  # the image shown is encoded again by the tuned engine
    assert w.actions_by_name["tune"].isEnabled()
    assert w.actions_by_name["use_previous_model"].isEnabled()


def test_a_model_that_fails_the_gate_is_not_used(qtbot, window, tuned_root, monkeypatch):
    w = window
    folder, manifest = tuned_model(tuned_root, "site-a", "1")
    monkeypatch.setattr(tune_dialog, "run_tune", lambda job, on_step, on_phase: outcome(
        folder, manifest, False, "not above the margin 0.000"))
    w.actions_by_name["tune"].trigger()
    qtbot.waitUntil(lambda: w.tuning.result_dialog is not None, timeout=WAIT_MS)
    assert "Not promoted" in w.tuning.result_dialog.verdict.text()
    assert "not above the margin" in w.tuning.result_dialog.reason.text()
    qtbot.wait(200)
    assert w.engine_label.text() == CLASSIC


def test_cancel_stops_the_tune_and_says_it_can_resume(qtbot, window, messages, tuned_root,
                                                      monkeypatch):
    w = window

    def slow_tune(job, on_step, on_phase):
        for step in range(1, 2001):
            on_step(step, 2000)
            time.sleep(0.005)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(tune_dialog, "run_tune", slow_tune)
    w.actions_by_name["tune"].trigger()
    progress = w.tuning.progress_dialog
    qtbot.waitUntil(lambda: progress.bar.value() >= 3, timeout=WAIT_MS)
    assert "left" in progress.steps.text()  # an ETA once steps have a pace
    qtbot.mouseClick(progress.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(messages), timeout=WAIT_MS)
    title, text = messages[0]
    assert title == "Tuning cancelled"
    assert "stopped at step" in text and "resumable" in text
    assert w.tuning.result_dialog is None and w.tuning.progress_dialog is None
    assert w.engine_label.text() == CLASSIC
    assert w.actions_by_name["tune"].isEnabled()


def test_use_previous_model_goes_back_one_promotion_then_to_the_default(qtbot, window,
                                                                       tuned_root):
    w = window
    folders = {}
    for version in ("1", "2"):
        folders[version], manifest = tuned_model(tuned_root, "site-a", version)
        registry.promote("site-a", manifest, "", tuned_root)
    w.use_engine(tune_dialog.learned_engine_factory(folders["2"]))
    qtbot.waitUntil(lambda: w.engine_label.text() == "engine learned: site-a@2", timeout=WAIT_MS)
    w.tuning.refresh_actions()
    demote = w.actions_by_name["use_previous_model"]
    assert demote.isEnabled()

    asked = answer_question("Use previous model")
    demote.trigger()
    assert "site-a@2" in asked[0]
    qtbot.waitUntil(lambda: w.engine_label.text() == "engine learned: site-a@1", timeout=WAIT_MS)
    assert registry.promoted_for("site-a").model_id == "site-a@1"

    answer_question("Use previous model")
    demote.trigger()
    qtbot.waitUntil(lambda: w.engine_label.text() == CLASSIC, timeout=WAIT_MS)
    assert registry.promoted_for("site-a") is None
    assert not demote.isEnabled()


def test_closing_the_window_cancels_a_running_tune_quietly(qtbot, window, messages,
                                                           tuned_root, monkeypatch):
    w = window
    started = threading.Event()

    def slow_tune(job, on_step, on_phase):
        for step in range(1, 2001):
            on_step(step, 2000)
            started.set()
            time.sleep(0.005)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(tune_dialog, "run_tune", slow_tune)
    w.actions_by_name["tune"].trigger()
    assert started.wait(10)
    w.close()
    assert w.clean_shutdown and not w.tuning.runner.running
    qtbot.wait(100)
    assert messages == []

"""Inspect > Find and Find similar, and the review queue (pytest-qt, offscreen, real key presses):
fake finders propose the dark defect of the test parts; A / Enter accept, R / Delete reject, each
decision lands in the audit trail, undo takes an accepted proposal back."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt  # noqa: E402

from app.gui.find_actions import NoFinder, default_find  # noqa: E402
from app.gui.find_queue import ACCEPTED, PENDING, REJECTED  # noqa: E402
from sam_engine.finder.types import FindResult, Found  # noqa: E402
from tests.gui_support import (  # noqa: E402
    DEFECT,
    SIZE,
    WAIT_MS,
    click,
    drag_box,
    parts_image,
    wait_mask,
    wait_ready,
    write_folder,
)

RECIPE = ('schema_version = 1\n[part]\nname = "find-test"\nversion = "1"\n'
          "[calibration]\nmm_per_px = 0.1\n[classes.pit]\nmax_area_mm2 = 100.0\n"
          "[classes.scratch]\nmax_length_mm = 100.0\n")


CTRL_SHIFT = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier

def dark_found(rgb: np.ndarray, cls: str, source: str) -> tuple[Found, ...]:
    """The dark rectangle of a test part as one found defect (none on a uniform image)."""
    mask = rgb[:, :, 0] < 120
    if not mask.any():
        return ()
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return (Found(cls, 0.87, mask, box, source),)


def fake_find(rgb, cls, recipe):
    return FindResult(dark_found(rgb, cls, "finder"), rgb.shape[:2], (cls,), "fake-finder@1")


class FakeExamples:
    """What teach() returns: finds the dark rectangle as `source` examples."""

    model_id = "fake-examples@1"

    def __init__(self, examples) -> None:
        self.examples = list(examples)
        self.n_examples = len(self.examples)

    def find(self, rgb, wanted=None):
        return list(dark_found(rgb, wanted[0], "examples"))


@pytest.fixture
def window(make_window, tmp_path, qtbot):
    """A window on three part images (classes pit, scratch) with the fake finder."""
    write_folder(tmp_path / "parts", n=3)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    w = make_window(tmp_path / "parts", recipe=recipe, prefetch=0)
    wait_ready(qtbot, w)
    w.finding.find_fn = fake_find
    w.finding.refresh_actions()
    return w


def find_and_wait(qtbot, w, key=Qt.Key.Key_F, mods=Qt.KeyboardModifier.ControlModifier):
    qtbot.keyClick(w.canvas, key, mods)
    qtbot.waitUntil(lambda: not w.finding.runner.running and w.finding.job is None,
                    timeout=WAIT_MS)


def decisions(w) -> list[dict]:
    return [{"action": e.action, **(e.after or {})} for e in w.store.audit_trail()
            if e.action.startswith("find_")]


def test_find_queues_proposals_and_a_accepts_one_undoably(qtbot, window):
    w = window
    assert w.act_find.text().replace("&", "") == "Find pit"
    find_and_wait(qtbot, w)
    queue = w.finding.review.queue
    assert len(queue.items) == 1 and queue.current is queue.items[0]
    p = queue.current
    assert (p.cls, p.path, p.box) == ("pit", w.current, DEFECT)
    assert w.finding.dock.isVisible() and "1</b> of 1 to review" in \
        w.finding.review.dock.summary.text()
    assert w.finding.review.overlay.items  # outline, box and tag drawn on the canvas
    assert w.act_queue_accept.isEnabled()

    click(qtbot, w, 40, 200)  # a prompt in progress elsewhere: accepting leaves it alone
    qtbot.keyClick(w.canvas, Qt.Key.Key_A)
    assert len(w.annotator.snapshot) == 1
    (finding,) = w.annotator.findings
    assert finding.defect_class == "pit" and finding.source == "finder"
    assert finding.measurements.area_px == 50 * 30 and finding.score == pytest.approx(0.87)
    assert p.state == ACCEPTED and queue.current is None
    stored = w.autosave.load(w.current)
    assert [f.defect_class for f in stored.findings] == ["pit"]
    (entry,) = decisions(w)
    assert entry["action"] == "find_accept" and entry["decision"] == "accept"
    assert (entry["defect_class"], entry["score"], entry["model_id"], entry["source"]) == \
        ("pit", 0.87, "fake-finder@1", "finder")
    assert entry["box"] == list(DEFECT)

    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.annotator.findings == [] and w.autosave.load(w.current).findings == []
    assert p.state == PENDING and queue.current is p  # back for a new decision
    # found again: not queued twice
    find_and_wait(qtbot, w)
    assert len(queue.items) == 1
    qtbot.keyClick(w.canvas, Qt.Key.Key_Escape)  # Enter accepts the prompts' masks first
    # Enter accepts it too (no prompt given); once accepted, finding again queues nothing
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    assert len(w.annotator.findings) == 1 and p.state == ACCEPTED
    find_and_wait(qtbot, w)
    assert len(queue.items) == 1
    assert "no new pit proposal" in w.messages.text()


def test_r_rejects_and_delete_rejects_both_recorded(qtbot, window):
    w = window
    find_and_wait(qtbot, w)
    p = w.finding.review.queue.current
    qtbot.keyClick(w.canvas, Qt.Key.Key_R)
    assert p.state == REJECTED and w.annotator.findings == []
    assert w.autosave.load(w.current) is None  # nothing stored for the image
    assert w.finding.review.overlay.items == []
    assert "review queue done: 0 accepted, 1 rejected" in w.statusBar().currentMessage()
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert p.state == PENDING and w.finding.review.queue.current is p
    qtbot.keyClick(w.canvas, Qt.Key.Key_Delete)  # no defect selected: rejects the proposal
    assert p.state == REJECTED and w.annotator.findings == []
    actions = [(e["action"], e["defect_class"], e["model_id"]) for e in decisions(w)]
    assert actions == [("find_reject", "pit", "fake-finder@1"),
                       ("find_reject_undone", "pit", "fake-finder@1"),
                       ("find_reject", "pit", "fake-finder@1")]


def test_a_class_without_a_finder_says_what_to_do(qtbot, window):
    w = window

    def no_finder(rgb, cls, recipe):
        raise NoFinder(f"no trained finder knows {cls}: train one (sam-inspect finder train)")

    w.finding.find_fn = no_finder
    find_and_wait(qtbot, w)
    text = w.messages.text()
    assert "no trained finder knows pit" in text
    assert "Accept one pit defect" in text and "Find similar (Ctrl+Shift+F)" in text
    assert w.finding.review.queue.items == []
    # once one pit is accepted, the message offers Find similar as a button
    drag_box(qtbot, w, DEFECT[0] - 6, DEFECT[1] - 6, DEFECT[2] + 6, DEFECT[3] + 6)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    find_and_wait(qtbot, w)
    buttons = [w.messages.buttons.itemAt(i).widget().text()
               for i in range(w.messages.buttons.count())]
    assert buttons == ["Find similar"]


def test_default_find_with_nothing_trained_says_how_to_teach_the_class():
    with pytest.raises(NoFinder, match="teach --class pit"):
        default_find(np.zeros((8, 8, 3), np.uint8), "pit", None)

def test_find_similar_learns_from_one_accepted_defect_and_queues_across_images(qtbot,
                                                                                window):
    w = window
    taught = []

    def teach(examples):
        taught.append(examples)
        return FakeExamples(examples)

    w.finding.teach_fn = teach
    act = w.act_find_similar
    assert not act.isEnabled() and "accept one pit defect first" in act.toolTip()
    qtbot.keyClick(w.canvas, Qt.Key.Key_F, CTRL_SHIFT)
    assert not taught  # disabled: the key does nothing

    drag_box(qtbot, w, DEFECT[0] - 6, DEFECT[1] - 6, DEFECT[2] + 6, DEFECT[3] + 6)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    assert act.isEnabled() and "1 accepted pit" in act.toolTip()
    first = w.current
    find_and_wait(qtbot, w, Qt.Key.Key_F, CTRL_SHIFT)
    (examples,) = taught
    assert [e.cls for e in examples] == ["pit"] and examples[0].mask.sum() > 1000
    assert examples[0].rgb.shape == (*SIZE, 3)
    queue = w.finding.review.queue
    # the accepted one is not proposed again; the two other images get one each
    assert [p.path.name for p in queue.items] == ["part_01.png", "part_02.png"]
    assert {p.source for p in queue.items} == {"examples"}
    assert queue.current is queue.items[0]
    qtbot.waitUntil(lambda: w.annotator.path == queue.items[0].path, timeout=WAIT_MS)
    assert w.current != first  # the queue opened the proposal's image
    qtbot.keyClick(w.canvas, Qt.Key.Key_A)
    stored = w.autosave.load(queue.items[0].path)
    assert [(f.defect_class, f.source) for f in stored.findings] == [("pit", "examples")]
    assert queue.current is queue.items[1]  # the next image opens at once
    qtbot.waitUntil(lambda: w.annotator.path == queue.items[1].path, timeout=WAIT_MS)
    qtbot.keyClick(w.canvas, Qt.Key.Key_N)  # skip: the only one left stays current
    assert queue.current is queue.items[1] and queue.items[1].state == PENDING
    qtbot.keyClick(w.canvas, Qt.Key.Key_R)
    assert [e["decision"] for e in decisions(w)] == ["accept", "reject"]
    assert {e["model_id"] for e in decisions(w)} == {"fake-examples@1"}
    # the second run learns from both accepted defects
    find_and_wait(qtbot, w, Qt.Key.Key_F, CTRL_SHIFT)
    assert len(taught[1]) == 2 and len(queue.items) == 2  # nothing new to review


def test_find_similar_cancel_keeps_what_was_found(qtbot, window):
    w = window
    gate, calls = threading.Event(), []

    class Slow(FakeExamples):
        def find(self, rgb, wanted=None):
            calls.append(1)
            gate.wait(10)
            return super().find(rgb, wanted)

    w.finding.teach_fn = Slow
    drag_box(qtbot, w, DEFECT[0] - 6, DEFECT[1] - 6, DEFECT[2] + 6, DEFECT[3] + 6)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    qtbot.keyClick(w.canvas, Qt.Key.Key_F, CTRL_SHIFT)
    qtbot.waitUntil(lambda: bool(calls), timeout=WAIT_MS)
    assert w.finding.review.dock.progress_row.isVisible()
    qtbot.mouseClick(w.finding.review.dock.cancel, Qt.MouseButton.LeftButton)
    gate.set()
    qtbot.waitUntil(lambda: not w.finding.runner.running, timeout=WAIT_MS)
    assert len(calls) == 1
    assert "find stopped" in w.finding.review.dock.summary.text()
    assert not w.finding.review.dock.progress_row.isVisible()
    assert w.act_find_similar.isEnabled()


def test_a_uniform_image_gives_an_empty_queue_and_says_so(qtbot, make_window, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    cv2.imwrite(str(folder / "uniform.png"), np.full((*SIZE, 3), 180, np.uint8))
    w = make_window(folder, prefetch=0)
    wait_ready(qtbot, w)
    w.finding.find_fn = fake_find
    find_and_wait(qtbot, w)
    assert w.finding.review.queue.items == []
    assert "no defect found on uniform.png (fake-finder@1)" in w.messages.text()
    assert "no defect found" in w.finding.review.dock.summary.text()
    qtbot.keyClick(w.canvas, Qt.Key.Key_A)  # nothing to accept: nothing happens
    assert w.annotator.findings == [] and decisions(w) == []


def test_the_queue_keeps_masks_cropped_and_drops_overlaps():
    from pathlib import Path

    from app.gui.find_queue import ProposalQueue, crop_iou, cropped
    from app.inspection.findings import Finding

    def rect(x0, y0, x1, y1):
        m = np.zeros((60, 80), bool)
        m[y0:y1, x0:x1] = True
        return m

    a, b = rect(10, 10, 30, 20), rect(20, 10, 40, 20)
    assert crop_iou(cropped(a), cropped(b)) == pytest.approx(100 / 300)
    assert crop_iou(cropped(a), cropped(rect(50, 40, 60, 50))) == 0.0
    found = (Found("pit", 0.9, a, (10, 10, 30, 20)), Found("pit", 0.8, rect(11, 10, 30, 20),
                                                           (11, 10, 30, 20)),
             Found("pit", 0.7, rect(50, 40, 60, 50), (50, 40, 60, 50)),
             Found("scratch", 0.6, rect(50, 40, 60, 50), (50, 40, 60, 50)))
    queue = ProposalQueue()
    accepted = [Finding("pit", mask=rect(50, 40, 61, 50))]
    added = queue.add(Path("x.png"), FindResult(found, (60, 80), ("pit",), "m"), accepted,
                      wanted="pit")
    # the second overlaps the first, the third an accepted pit, the fourth is not wanted
    assert [(p.box, p.score) for p in added] == [((10, 10, 30, 20), 0.9)]
    assert added[0].crop.shape == (10, 20) and np.array_equal(added[0].mask(), a)
    assert queue.add(Path("x.png"), FindResult(found[:1], (60, 80), ("pit",), "m")) == []


def test_find_similar_with_the_real_fewshot_teacher(qtbot, make_window, tmp_path):
    """The default teach_fn (sam_engine.finder.fewshot), taught by one accepted defect, finds
    the same dark defect on the two other parts."""
    pytest.importorskip("sam_engine.finder.fewshot")
    folder, box = tmp_path / "big", (240, 160, 300, 200)
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"part_{i:02d}.png"), parts_image([box], (480, 640), seed=i))
    w = make_window(folder, prefetch=0)
    wait_ready(qtbot, w)
    drag_box(qtbot, w, box[0] - 6, box[1] - 6, box[2] + 6, box[3] + 6)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    find_and_wait(qtbot, w, Qt.Key.Key_F, CTRL_SHIFT)
    assert w.messages.kind != "error" or not w.messages.text(), w.messages.text()
    queue = w.finding.review.queue
    assert {p.model_id for p in queue.items} == {"examples:defect×1"}
    hits = {p.path.name for p in queue.items if p.source == "examples" and overlaps(p.box, box)}
    assert hits == {"part_01.png", "part_02.png"}


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

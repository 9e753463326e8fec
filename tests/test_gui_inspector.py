"""The inspector's window, item by item of issue 19, with real mouse and key events (pytest-qt,
offscreen): judgement and numbering, seeing the masks, honest status, discoverable controls."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication, QLineEdit, QToolButton  # noqa: E402

from app.gui.options import GuiOptions  # noqa: E402
from app.gui.settings import Settings  # noqa: E402
from tests.gui_support import (  # noqa: E402
    DEFECT,
    WAIT_MS,
    ScriptedEngine,
    answer_question,
    click,
    drag_box,
    parts_image,
    wait_mask,
    wait_ready,
    write_folder,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"
# three dark defects; the third touches the image's right edge
THREE = ((20, 60, 60, 90), (120, 80, 170, 110), (280, 150, 320, 200))
STRICT = ('schema_version = 1\n[part]\nname = "strict"\nversion = "2"\n'
          "[calibration]\nmm_per_px = 0.1\n[classes.pit]\nmax_area_mm2 = 1.0\n"
          "[classes.scratch]\nmax_length_mm = 1.0\n")


def three_defect_folder(tmp_path) -> Path:
    folder = tmp_path / "three"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), parts_image(THREE))
    cv2.imwrite(str(folder / "b.png"), parts_image(()))
    return folder


def mark(qtbot, w, box, pad=4):
    x0, y0, x1, y1 = box
    drag_box(qtbot, w, x0 - pad, y0 - pad, min(x1 + pad, 319), y1 + pad)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w.annotator.snapshot == (), timeout=WAIT_MS)


def refocus(qtbot, w):
    """After a dialog closes, the window is active again (window shortcuts need that)."""
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=WAIT_MS)


def table_numbers(w) -> list[int]:
    return [int(w.panel.table.item(r, 0).text()) for r in range(w.panel.table.rowCount())]


def click_row(qtbot, w, row: int):
    table = w.panel.table
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


# ---------------------------------------------------------------- judgement and numbering


def test_finishing_an_untouched_image_asks_and_the_record_says_so(qtbot, make_window,
                                                                   tmp_path):
    paths = write_folder(tmp_path / "parts", n=3)
    w = make_window(tmp_path / "parts")
    wait_ready(qtbot, w)
    text = w.panel.verdict.text()
    assert "PASS" not in text and "Not judged yet" in text  # no verdict before any work
    assert w.canvas.badge is None

    seen = answer_question("Cancel")
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert seen and "Nothing was marked on part_00.png" in seen[0]
    assert w.current == paths[0] and w.autosave.load(paths[0]) is None  # nothing stored

    refocus(qtbot, w)
    answer_question("No defects: PASS")
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    stored = w.autosave.load(paths[0])
    assert stored.verdict.status == "PASS" and w.current == paths[1]
    refocus(qtbot, w)
    trail = w.store.audit_trail(inspection_id=stored.id)
    assert trail[-1].after["finished"] == "no defects confirmed"

    # the explicit action needs no question and says the same
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    second = w.autosave.load(paths[1])
    assert second.verdict.status == "PASS" and w.current == paths[2]
    assert w.store.audit_trail(inspection_id=second.id)[-1].after["finished"] == \
        "no defects confirmed"

    # an image that was worked on is finished without a question, recorded as reviewed
    mark(qtbot, w, DEFECT)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    third = w.autosave.load(paths[2])
    assert third.verdict is not None
    assert w.store.audit_trail(inspection_id=third.id)[-1].after["finished"] == "reviewed"


def test_one_stable_number_per_defect_everywhere_after_delete_and_undo(qtbot, make_window,
                                                                        tmp_path):
    folder = three_defect_folder(tmp_path)
    recipe = tmp_path / "strict.toml"
    recipe.write_text(STRICT)
    w = make_window(folder, recipe=recipe)
    wait_ready(qtbot, w)
    for box in THREE:
        mark(qtbot, w, box)
    an = w.annotator
    assert table_numbers(w) == [1, 2, 3]
    colours = {d.number: d.colour.name() for d in w.canvas._defect_draws}
    second_mask = an.finding_numbered(2).mask

    click_row(qtbot, w, 1)  # defect #2
    assert w.panel.selected_number() == 2
    qtbot.keyClick(w.canvas, Qt.Key.Key_Delete)
    assert table_numbers(w) == [1, 3]  # nobody is renumbered
    assert [d.number for d in w.canvas._defect_draws] == [1, 3]
    assert [d.label.split()[0] for d in w.canvas._defect_draws] == ["#1", "#3"]
    assert {d.number: d.colour.name() for d in w.canvas._defect_draws} == {
        1: colours[1], 3: colours[3]}  # colours follow the number
    assert [f.number for f in w.autosave.load(w.current).findings] == [1, 3]
    reasons = " ".join(r.message for r in an.live_verdict().reasons)
    assert "#3" in reasons and "#2" not in reasons and "#0" not in reasons

    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo delete
    assert table_numbers(w) == [1, 2, 3]
    assert np.array_equal(an.finding_numbered(2).mask, second_mask)  # the same #2 is back
    stored = w.autosave.load(w.current)
    assert [f.number for f in stored.findings] == [1, 2, 3]
    assert np.array_equal(stored.findings[1].mask, second_mask)

    # undo the third accept, redo it: it comes back as #3, not #4
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert table_numbers(w) == [1, 2]
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert table_numbers(w) == [1, 2, 3]
    assert [f.number for f in w.autosave.load(w.current).findings] == [1, 2, 3]

    # delete #1 for good, finish: the report and the store say #2 and #3
    click_row(qtbot, w, 0)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Delete)
    w.annotator.finish()
    report = w.show_report()
    assert report is not None, w.messages.text()
    qtbot.addWidget(report)
    text = report.browser.toPlainText()
    assert "#2" in text and "#3" in text and "#1" not in text
    report.close()
    stored = w.autosave.load(w.current)
    assert [f.number for f in stored.findings] == [2, 3]
    assert {r.defect_number for r in stored.verdict.reasons if r.defect_number} <= {2, 3}
    summary = w.export_to(tmp_path / "export")  # the label map's values are the numbers
    labels = cv2.imread(str(summary.masks_dir / "a.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(labels).tolist()) == {0, 2, 3}
    coco = json.loads(summary.coco_path.read_text())
    assert [a["defect_number"] for a in coco["annotations"]] == [2, 3]


def test_the_image_shows_a_verdict_badge_zones_datum_and_the_selected_figures(
        qtbot, make_window, tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    img = np.full((480, 640, 3), 180, np.uint8)
    img[10:30, 100:300] = 60  # a long scratch inside the sealing face
    cv2.imwrite(str(folder / "p.png"), img)
    w = make_window(folder, recipe=DEMO_RECIPE)
    wait_ready(qtbot, w)
    zone_names = [name for name, _ in w.canvas.overlay.zones]
    assert zone_names == ["sealing_face", "bore"] and w.canvas.overlay.datum[0] == "line"
    assert len(w.canvas._zone_items) == 3 and all(i.isVisible() for i in w.canvas._zone_items)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z)  # zones off and on
    assert not any(i.isVisible() for i in w.canvas._zone_items)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z)
    drag_box(qtbot, w, 96, 6, 304, 34)
    wait_mask(qtbot, w)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(w.annotator.findings) == 1, timeout=WAIT_MS)
    assert w.canvas.badge == ("FAIL so far", False)
    click_row(qtbot, w, 0)
    assert w.canvas.details[0] == "#1 scratch"
    assert any(line.startswith("length") and "mm" in line for line in w.canvas.details)
    assert any("sealing_face" in line for line in w.canvas.details)  # why it fails
    QApplication.processEvents()
    shot = w.canvas.viewport().grab().toImage()
    badge = w.canvas.badge_rect
    assert badge is not None and QRectF(w.canvas.viewport().rect()).contains(badge)
    head = shot.pixelColor(int(badge.left()) + 4, int(badge.top()) + 8)
    assert head.red() > 150 and head.green() < 90  # red FAIL badge


def test_table_row_selection_highlights_and_alt_click_selects_a_mask(qtbot, make_window,
                                                                      tmp_path):
    w = make_window(three_defect_folder(tmp_path))
    wait_ready(qtbot, w)
    for box in THREE[:2]:
        mark(qtbot, w, box)
    items = {item.number: item for item in w.canvas.defect_items()}
    click_row(qtbot, w, 1)
    assert w.canvas.selected == 2 and items[2].highlighted and not items[1].highlighted
    x0, y0, x1, y1 = THREE[0]
    n_prompts = len(w.annotator.snapshot)
    click(qtbot, w, (x0 + x1) / 2, (y0 + y1) / 2, mods=Qt.KeyboardModifier.AltModifier)
    assert w.panel.selected_number() == 1 and w.canvas.selected == 1
    items = {item.number: item for item in w.canvas.defect_items()}
    assert items[1].highlighted and not items[2].highlighted
    assert len(w.annotator.snapshot) == n_prompts  # Alt+click added no point
    # select mode: a plain click selects
    qtbot.keyClick(w.canvas, Qt.Key.Key_S)
    x0, y0, x1, y1 = THREE[1]
    click(qtbot, w, (x0 + x1) / 2, (y0 + y1) / 2)
    assert w.canvas.selected == 2 and w.annotator.snapshot == ()


def test_labels_have_a_background_stay_in_view_and_markers_are_small(qtbot, make_window,
                                                                      tmp_path):
    w = make_window(three_defect_folder(tmp_path), recipe=DEMO_RECIPE)
    wait_ready(qtbot, w)
    w.panel.choose_class(w.autosave.class_names.index("pit"))
    mark(qtbot, w, THREE[2])  # at the right edge of the image
    w.canvas.zoom_by(4.0, QPointF(w.canvas.viewport().width() - 5, 5))  # zoom at that corner
    QApplication.processEvents()
    shot = w.canvas.viewport().grab().toImage()
    view = QRectF(w.canvas.viewport().rect())
    ((number, rect),) = w.canvas.label_rects
    assert number == 1 and view.contains(rect)
    label = w.canvas._defect_draws[0].label
    assert label.startswith("#1 pit · ") and "mm²" in label  # the pit's key measurement
    corner = shot.pixelColor(int(rect.left()) + 2, int(rect.bottom()) - 2)
    assert max(corner.red(), corner.green(), corner.blue()) < 60  # dark box behind the text

    x0, y0, x1, y1 = THREE[0]
    click(qtbot, w, (x0 + x1) / 2, (y0 + y1) / 2)
    (marker,) = w.canvas.marker_items()
    assert marker.rect().width() <= 8 and marker.brush().style() == Qt.BrushStyle.NoBrush
    qtbot.keyClick(w.canvas, Qt.Key.Key_H)  # hide the prompts
    assert not marker.isVisible()
    click(qtbot, w, x0 + 2, y0 + 2)
    assert all(not m.isVisible() for m in w.canvas.marker_items())
    qtbot.keyClick(w.canvas, Qt.Key.Key_H)
    assert all(m.isVisible() for m in w.canvas.marker_items())


@pytest.mark.parametrize(("score", "big"), [(0.196, False), (0.95, True)])
def test_a_doubtful_mask_is_questioned_before_it_is_accepted(qtbot, make_window, tmp_path,
                                                             score, big):
    write_folder(tmp_path / "parts", n=1)
    mask = np.zeros((240, 320), bool)
    if big:
        mask[:, :300] = True  # 94% of the image
    else:
        mask[80:110, 120:170] = True
    w = make_window(tmp_path / "parts", engine=ScriptedEngine(mask, score))
    wait_ready(qtbot, w)
    drag_box(qtbot, w, 10, 10, 300, 230)
    wait_mask(qtbot, w)
    assert "⚠" in w.panel.candidate.text()  # warned before Enter
    seen = answer_question("Cancel")
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    assert seen and ("low score 0.196" in seen[0] if not big else "covers 94%" in seen[0])
    assert w.annotator.findings == [] and w.annotator.snapshot != ()
    refocus(qtbot, w)
    answer_question("Accept anyway")
    qtbot.keyClick(w.canvas, Qt.Key.Key_Return)
    assert len(w.annotator.findings) == 1


# ---------------------------------------------------------------- status and controls


def test_status_clears_when_prefetching_ends(qtbot, make_window, tmp_path):
    paths = write_folder(tmp_path / "parts", n=3)
    w = make_window(tmp_path / "parts", prefetch=2)
    wait_ready(qtbot, w)
    qtbot.waitUntil(lambda: {paths[1], paths[2]} <= set(w.host.ready), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: w.host.encoding is None, timeout=WAIT_MS)
    QApplication.processEvents()
    assert not w.progress_label.text().startswith(("prefetching", "computing"))
    assert not w.progress.isVisible()


def test_export_result_stays_visible_and_a_typed_folder_is_created(qtbot, make_window,
                                                                   tmp_path):
    write_folder(tmp_path / "parts", n=1)
    w = make_window(tmp_path / "parts")
    wait_ready(qtbot, w)
    mark(qtbot, w, DEFECT)
    dialog = w.export_dialog()
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.activateWindow()
    qtbot.waitUntil(dialog.isActiveWindow, timeout=WAIT_MS)
    edit = dialog.findChild(QLineEdit, "fileNameEdit")
    target = tmp_path / "parts" / "new_export"
    edit.clear()
    qtbot.keyClicks(edit, "new_export")
    qtbot.keyClick(edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=WAIT_MS)
    (chosen,) = dialog.selectedFiles()
    assert Path(chosen) == target and not target.exists()
    summary = w.export_to(Path(chosen))
    assert summary is not None and (target / "annotations_coco.json").is_file()
    assert w.messages.isVisible() and w.messages.kind == "info"
    assert "Exported 1 defects" in w.messages.text()
    qtbot.wait(50)
    assert w.messages.isVisible()  # not a status message that times out


def test_toolbar_buttons_keep_their_place_as_undo_text_changes(qtbot, make_window, tmp_path):
    write_folder(tmp_path / "parts", n=1)
    w = make_window(tmp_path / "parts")
    wait_ready(qtbot, w)

    def places():
        return [(b.text(), b.x(), b.width()) for b in w.toolbar.findChildren(QToolButton)
                if b.isVisible() and b.defaultAction() is not None]

    before = places()
    assert w.act_undo.text() == "&Undo" and not w.act_undo.isEnabled()
    mark(qtbot, w, DEFECT)
    QApplication.processEvents()
    assert w.act_undo.isEnabled() and "accept" in w.act_undo.toolTip()
    assert places() == before
    qtbot.keyClick(w.canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    QApplication.processEvents()
    assert places() == before and w.act_redo.isEnabled()


def test_menus_quit_and_the_shortcut_sheet(qtbot, make_window, tmp_path):
    write_folder(tmp_path / "parts", n=1)
    ini = tmp_path / "custom.ini"
    ini.write_text("[shortcuts]\nfinish=Ctrl+K\ntoggle_prompts=\n")
    w = make_window(tmp_path / "parts", settings=Settings.at(ini))
    wait_ready(qtbot, w)
    menus = [a.text().replace("&", "") for a in w.menuBar().actions()]
    assert menus == ["File", "Edit", "View", "Inspect", "Tools", "Help"]
    file_menu = w.menuBar().actions()[0].menu()
    assert "Export…" in [a.text().replace("&", "") for a in file_menu.actions()]
    # shortcuts from the settings file
    assert [s.toString() for s in w.act_finish.shortcuts()] == ["Ctrl+K"]
    assert w.act_prompts.shortcuts() == []
    qtbot.keyClick(w.canvas, Qt.Key.Key_F1)
    sheet = w.shortcut_sheet
    qtbot.waitExposed(sheet)
    rows = {sheet.table.item(r, 2).text(): sheet.table.item(r, 1).text()
            for r in range(sheet.table.rowCount())}
    assert rows["finish"] == "Ctrl+K" and rows["quit"] == "Ctrl+Q"
    assert rows["toggle_prompts"] == "–"
    sheet.close()
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    qtbot.keyClick(w.canvas, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=WAIT_MS)


def test_a_folder_without_a_recipe_says_which_recipe_judges_it(qtbot, make_window, tmp_path):
    demo = tmp_path / "demo"
    write_folder(demo, n=2)
    (demo / "recipe.toml").write_text(DEMO_RECIPE.read_text())
    real = tmp_path / "real"
    write_folder(real, n=2)
    w = make_window(demo)
    wait_ready(qtbot, w)
    assert not w.recipe_banner.isVisible()
    qtbot.keyClick(w.canvas, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert w.panel.current_class() == w.autosave.class_names[1]
    qtbot.keyClick(w.canvas, Qt.Key.Key_PageDown)
    assert w.panel.current_class() == w.autosave.class_names[0]  # no silent carry-over
    w.open_folder(real)
    wait_ready(qtbot, w)
    assert w.recipe_banner.isVisible() and w.recipe_banner.kind == "warning"
    assert "No recipe in real: using demo_part" in w.recipe_banner.text()
    buttons = {b.text(): b for b in w.recipe_banner.findChildren(type(w.auto_wl))}
    assert {"Choose recipe…", "Use no recipe", "Keep it"} <= set(buttons)
    qtbot.mouseClick(buttons["Use no recipe"], Qt.MouseButton.LeftButton)
    assert w.autosave.recipe is None
    assert "pixels only" in w.recipe_banner.text()


def test_smaller_things(qtbot, make_window, tmp_path, monkeypatch):
    from app.gui.main import missing_xcb_packages

    folder = tmp_path / "parts"
    paths = write_folder(folder, n=3, corrupt_at=1)
    long_name = folder / ("a_very_long_part_photo_name_from_the_line_camera_" + "x" * 40
                          + "_0013.png")
    paths[0].rename(long_name)
    settings = Settings.at(tmp_path / "s.ini")
    w = make_window(folder, settings=settings)
    wait_ready(qtbot, w)
    item = w.folder_list._items[long_name]
    shown = item.text().splitlines()[0]
    assert "…" in shown and shown.endswith("_0013.png") and str(long_name) in item.toolTip()

    # a stale error banner goes with its image
    w.go_to(paths[1])
    qtbot.waitUntil(lambda: w.messages.isVisible(), timeout=WAIT_MS)
    w.go_to(paths[2])
    assert not w.messages.isVisible()
    wait_ready(qtbot, w)
    mark(qtbot, w, DEFECT)

    # the report's Save dialog starts in the image's folder
    report = w.show_report()
    qtbot.addWidget(report)
    assert report.folder == folder
    report.close()
    w.close()

    # reopening starts at the image worked on last
    w2 = make_window(folder, settings=settings)
    wait_ready(qtbot, w2)
    assert w2.current == paths[2]
    w2.close()

    # no folder open: the report panel says to open one
    w3 = make_window(None, settings=Settings.at(tmp_path / "empty.ini"))
    assert w3.show_report() is None and "open a folder" in w3.messages.text()

    # Qt's xcb plugin without libxcb-cursor0: say what to install
    only_cursor = lambda lib: None if lib == "xcb-cursor" else f"lib{lib}.so"  # noqa: E731
    assert missing_xcb_packages(only_cursor, {"DISPLAY": ":0"}) == ["libxcb-cursor0"]
    assert missing_xcb_packages(lambda lib: "libxcb-cursor.so.0", {"DISPLAY": ":0"}) == []
    assert missing_xcb_packages(lambda lib: None, {"QT_QPA_PLATFORM": "offscreen"}) == []


def test_a_missing_xcb_library_is_named_instead_of_qts_plugin_error(monkeypatch, capsys):
    from app.gui import main as gui_main

    monkeypatch.setattr(gui_main, "missing_xcb_packages", lambda: ["libxcb-cursor0"])
    assert gui_main.run(GuiOptions()) == 2
    err = capsys.readouterr().err
    assert "libxcb-cursor0" in err and "apt-get install libxcb-cursor0" in err

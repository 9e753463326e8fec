"""The inspector's main window: folder dock, canvas, defect panel, toolbar, status bar.

Keys: PageDown/Right next image, PageUp/Left previous; left click positive point, right click or
Shift+click negative point, drag box; Tab / Shift+Tab cycle candidates, 1/2/3 pick one; Enter
accept, Esc clear prompts; Ctrl+1..9 defect class; Ctrl+Z undo, Ctrl+Shift+Z redo; Delete
removes the selected defect; Ctrl+Enter finishes the image (stores PASS/FAIL) and moves on;
F fits the image, wheel zooms at the cursor, middle or Ctrl+drag pans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.about_dialog import AboutDialog
from app.gui.annotator import Annotator
from app.gui.autosave import Autosave, Station
from app.gui.canvas import Canvas
from app.gui.defect_panel import DefectPanel
from app.gui.export import ExportSummary, export_folder
from app.gui.folder_dock import FolderList
from app.gui.images import LoadedImage, auto_window, list_images, window_lut
from app.gui.options import GuiOptions
from app.gui.report_dialog import ReportDialog
from app.gui.settings import Settings
from app.gui.workers import EngineHost, Prepared
from app.recipe import Recipe, load_recipe
from app.store import InspectionStore, StoreError
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

DB_NAME = "inspections.db"


def default_db_path() -> Path:
    """inspections.db in the user data folder (app.paths when present, else Qt's)."""
    try:
        from app.paths import user_data_dir

        folder = user_data_dir()
    except ImportError:
        folder = Path(QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.AppLocalDataLocation))
    return folder / DB_NAME


def folder_recipe(folder: Path) -> Path | None:
    """A recipe that travels with the images: FOLDER/recipe.toml or FOLDER/recipes/*.toml."""
    if (folder / "recipe.toml").is_file():
        return folder / "recipe.toml"
    found = sorted((folder / "recipes").glob("*.toml")) if (folder / "recipes").is_dir() else []
    return found[0] if found else None


def default_engine_factory(options: GuiOptions) -> Callable[[], object]:
    """load_engine(options.engine, ...) on the encoder thread; the desktop bundle's choice
    (ONNX exports, lite flavour) when app.engine_choice is there and no model was named."""

    def build():
        if options.model is None and options.checkpoint is None:
            try:
                from app.engine_choice import DESKTOP_ENGINES, load_desktop_engine
            except ImportError:
                pass
            else:
                if options.engine in DESKTOP_ENGINES:
                    return load_desktop_engine(options.engine)
        from sam_engine.factory import load_engine

        return load_engine(options.engine, model=options.model, checkpoint=options.checkpoint)

    return build


def classic_fallback(note: str) -> Callable[[], object]:
    def build():
        from dataclasses import replace

        from sam_engine.factory import load_engine

        engine = load_engine("classic")
        engine.info = replace(engine.info, note=note)
        return engine

    return build


class MessageBar(QFrame):
    """Errors in the window (not modal): the inspector reads them and keeps working."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setStyleSheet("MessageBar { background: #fde2e1; border: 1px solid #cf222e; }"
                           "QLabel { color: #82071e; }")
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        close = QToolButton()
        close.setText("✕")
        close.clicked.connect(self.hide)
        row.addWidget(close)
        self.hide()

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class MainWindow(QMainWindow):
    def __init__(self, options: GuiOptions | None = None, *,
                 engine_factory: Callable[[], object] | None = None,
                 settings: Settings | None = None) -> None:
        super().__init__()
        self.options = options or GuiOptions()
        self.settings = settings or Settings()
        self.setWindowTitle("sam-inspect")
        self.clean_shutdown = True
        self.folder: Path | None = None
        self.paths: list[Path] = []
        self.current: Path | None = None
        self._engine_factory_used_fallback = False

        self.messages = MessageBar()
        self.store = self._open_store()
        self.autosave = Autosave(self.store, None, Station(self.options.operator,
                                                           self.options.station,
                                                           self.options.lot))
        self.host = EngineHost(self.options.prefetch, self)
        self.canvas = Canvas()
        self.annotator = Annotator(self.canvas, self.host, self.autosave, self)
        self.folder_list = FolderList()
        self.panel = DefectPanel(self.autosave.class_names)

        self._build_layout()
        self._build_status_bar()
        self._build_actions()
        self._connect()
        self._restore_window()

        self.host.load_engine(engine_factory or default_engine_factory(self.options))
        if self.options.recipe is not None:
            self.load_recipe(self.options.recipe)
        folder = self.options.folder or self.settings.last_folder
        if folder is not None and Path(folder).is_dir():
            self.open_folder(Path(folder))
        elif self.autosave.recipe is None and self.settings.last_recipe is not None:
            self.load_recipe(self.settings.last_recipe)

    # ------------------------------------------------------------------ construction
    def _open_store(self) -> InspectionStore:
        db = self.options.db or self.settings.db or str(default_db_path())
        self.db_location = db
        try:
            if "://" not in db:
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            store = InspectionStore(db)
        except (StoreError, OSError) as exc:
            self.messages.show_message(
                f"cannot open the inspection database {db}: {exc}. Defects are NOT saved this "
                "session (in-memory database); restart with --db PATH")
            self.db_location = "sqlite:// (in memory)"
            return InspectionStore("sqlite://")
        if self.options.db:
            self.settings.db = db
        return store

    def _build_layout(self) -> None:
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(0)
        col.addWidget(self.messages)
        col.addWidget(self.canvas, 1)
        self.setCentralWidget(central)
        left = QDockWidget("Folder", self)
        left.setObjectName("folder_dock")
        left.setWidget(self.folder_list)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)
        right = QDockWidget("Defects", self)
        right.setObjectName("defect_dock")
        right.setWidget(self.panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)
        self.resize(1400, 900)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.engine_label = QLabel("loading engine…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy: the encoder reports no steps
        self.progress.setMaximumWidth(160)
        self.progress.setVisible(False)
        self.progress_label = QLabel("")
        self.latency_label = QLabel("")
        self.pixel_label = QLabel("")
        bar.addWidget(self.progress_label)
        bar.addWidget(self.progress)
        self.db_label = QLabel(f"saving to {Path(self.db_location).name}")
        self.db_label.setToolTip(f"inspection database: {self.db_location}")
        bar.addPermanentWidget(self.db_label)
        bar.addPermanentWidget(self.pixel_label)
        bar.addPermanentWidget(self.latency_label)
        bar.addPermanentWidget(self.engine_label)

    def _action(self, text: str, keys, slot, tip: str = "") -> QAction:
        action = QAction(text, self)
        if keys:
            seqs = [QKeySequence(k) for k in (keys if isinstance(keys, list | tuple) else [keys])]
            action.setShortcuts(seqs)
        action.setToolTip(f"{tip or text} ({', '.join(s.toString() for s in action.shortcuts())})"
                          if keys else tip or text)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_open = a("Open folder…", QKeySequence.StandardKey.Open, self.choose_folder)
        self.act_recipe = a("Open recipe…", "Ctrl+R", self.choose_recipe)
        self.act_prev = a("Previous", ["PgUp", "Left"], self.previous_image, "previous image")
        self.act_next = a("Next", ["PgDown", "Right"], self.next_image, "next image")
        self.act_fit = a("Fit", "F", self.canvas.fit, "fit the image to the window")
        a("Zoom in", ["+", "="], lambda: self.canvas.zoom_by(1.25))
        a("Zoom out", "-", lambda: self.canvas.zoom_by(0.8))
        self.act_undo = self.annotator.undo.createUndoAction(self, "Undo")
        self.act_undo.setShortcuts([QKeySequence.StandardKey.Undo])
        self.act_redo = self.annotator.undo.createRedoAction(self, "Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.addAction(self.act_undo)
        self.addAction(self.act_redo)
        self.act_accept = a("Accept", ["Return", "Enter"], self.annotator.accept,
                            "accept the mask(s) as defects")
        self.act_clear = a("Clear", "Esc", self.annotator.clear_prompts, "clear the prompts")
        self.act_finish = a("Finish", ["Ctrl+Return", "Ctrl+Enter"], self.finish_and_next,
                            "store PASS/FAIL and go to the next image")
        a("Next candidate", "Tab", lambda: self.annotator.cycle(1))
        a("Previous candidate", "Shift+Tab", lambda: self.annotator.cycle(-1))
        for c in range(3):
            a(f"Candidate {c + 1}", str(c + 1), lambda _=False, c=c: self.annotator.choose(c))
        for k in range(9):
            a(f"Class {k + 1}", f"Ctrl+{k + 1}", lambda _=False, k=k: self.panel.choose_class(k))
        a("Delete defect", "Del", self.delete_selected)
        self.act_export = a("Export…", "Ctrl+E", self.choose_export,
                            "export this folder's annotations (COCO JSON + PNG masks)")
        self.act_report = a("Report…", "Ctrl+Shift+R", self.show_report,
                            "the current image's inspection report (preview, save as PDF)")
        self.act_about = a("About", None, self.show_about)

        tools = QToolBar("Main", self)
        tools.setObjectName("main_toolbar")
        for act in (self.act_open, self.act_recipe, None, self.act_prev, self.act_next,
                    self.act_fit, None, self.act_undo, self.act_redo, self.act_accept,
                    self.act_clear, self.act_finish, None, self.act_export, self.act_report):
            tools.addSeparator() if act is None else tools.addAction(act)
        tools.addSeparator()
        tools.addWidget(QLabel(" Window "))
        self.window_spin = QSpinBox()
        self.level_spin = QSpinBox()
        for spin in (self.window_spin, self.level_spin):
            spin.setRange(1, 65535)
            spin.setEnabled(False)
            spin.setKeyboardTracking(False)
            tools.addWidget(spin)
            if spin is self.window_spin:
                tools.addWidget(QLabel(" Level "))
        self.auto_wl = QPushButton("Auto")
        self.auto_wl.setEnabled(False)
        tools.addWidget(self.auto_wl)
        tools.addSeparator()
        tools.addAction(self.act_about)
        self.addToolBar(tools)

    def _connect(self) -> None:
        h, an = self.host, self.annotator
        h.engineReady.connect(self._on_engine)
        h.engineFailed.connect(self._on_engine_failed)
        h.imageLoaded.connect(self._on_loaded)
        h.imageReady.connect(self._on_ready)
        h.imageFailed.connect(self._on_failed)
        h.busy.connect(self._on_busy)
        h.thumbnail.connect(self.folder_list.set_thumbnail)
        self.canvas.pointClicked.connect(an.add_point)
        self.canvas.boxDrawn.connect(an.add_box)
        self.canvas.cycleRequested.connect(an.cycle)
        self.canvas.hovered.connect(self._on_hover)
        an.candidateInfo.connect(self.panel.candidate.setText)
        an.defectsUpdated.connect(self._refresh_defects)
        an.statusChanged.connect(self.folder_list.set_status)
        an.message.connect(self.messages.show_message)
        an.latency.connect(self._on_latency)
        self.folder_list.activatedPath.connect(self.go_to)
        self.panel.classChosen.connect(self._on_class)
        self.panel.applyClass.connect(self._apply_class)
        self.panel.deleteRequested.connect(self._delete_row)
        self.window_spin.valueChanged.connect(self._on_window)
        self.level_spin.valueChanged.connect(self._on_window)
        self.auto_wl.clicked.connect(self._auto_window)

    def _restore_window(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # ------------------------------------------------------------------ engine
    def _on_engine(self, engine) -> None:
        self.autosave.engine = engine.info
        self.engine_label.setText(f"engine {engine.info.describe()}")
        self.engine_label.setToolTip(engine.info.describe())

    def _on_engine_failed(self, message: str) -> None:
        self.messages.show_message(message)
        if not self._engine_factory_used_fallback:
            self._engine_factory_used_fallback = True
            self.host.load_engine(classic_fallback(f"{message}; using the default engine"))
        else:
            self.engine_label.setText("no engine")

    # ------------------------------------------------------------------ recipe
    def load_recipe(self, path: Path) -> Recipe | None:
        try:
            recipe = load_recipe(path)
        except (SamEngineError, OSError) as exc:
            self.messages.show_message(f"recipe not loaded: {exc}")
            return None
        self.autosave.set_recipe(recipe)
        self.settings.last_recipe = path
        self.panel.set_classes(self.autosave.class_names)
        self.annotator.current_class = self.panel.current_class()
        self.panel.note.setText(f"recipe {recipe.name} {recipe.version}"
                                + (f" · {self.autosave.calibration_note}"
                                   if self.autosave.calibration_note else ""))
        self._refresh_defects()
        return recipe

    # ------------------------------------------------------------------ folder, images
    def open_folder(self, folder: Path) -> None:
        try:
            paths = list_images(folder)
        except OSError as exc:
            self.messages.show_message(f"cannot list the folder {folder}: {exc}")
            return
        self.folder, self.paths = Path(folder), paths
        self.settings.last_folder = Path(folder).resolve()
        if self.options.recipe is None:  # a recipe in the folder wins over the last one used
            recipe = folder_recipe(Path(folder)) or (
                self.settings.last_recipe if self.autosave.recipe is None else None)
            if recipe is not None:
                self.load_recipe(recipe)
        self.setWindowTitle(f"sam-inspect — {folder}")
        try:
            statuses = self.autosave.statuses(paths)
        except StoreError as exc:
            self.messages.show_message(str(exc))
            statuses = {}
        self.folder_list.set_paths(paths, statuses)
        self.host.set_folder(paths)
        if not paths:
            self.messages.show_message(f"no images in {folder} (looked for .png, .jpg, .tif, "
                                       ".bmp files)")
            self.annotator.clear_image()
            return
        todo = next((p for p in paths if statuses.get(p) not in ("PASS", "FAIL")), paths[0])
        self.go_to(todo)

    def go_to(self, path: Path) -> None:
        if path == self.current and self.annotator.path == path:
            return
        self.current = path
        self.folder_list.select(path)
        prepared = self.host.open(path)
        if prepared is not None:
            self._show(path, prepared.image)
            self.annotator.set_prepared(prepared)
        else:
            self.annotator.clear_image()
            self.panel.candidate.setText(f"loading {path.name}…")

    def next_image(self) -> None:
        self._step(1)

    def previous_image(self) -> None:
        self._step(-1)

    def _step(self, d: int) -> None:
        if not self.paths:
            return
        i = self.paths.index(self.current) if self.current in self.paths else -d
        j = i + d
        if 0 <= j < len(self.paths):
            self.go_to(self.paths[j])

    def _show(self, path: Path, image: LoadedImage) -> None:
        lut = None
        is16 = image.is16bit
        for w in (self.window_spin, self.level_spin, self.auto_wl):
            w.setEnabled(is16)
        if is16:
            window, level = auto_window(image.display)
            self._set_window_spins(window, level)
            lut = window_lut(window, level)
        self.annotator.set_image(path, image, lut)

    def _on_loaded(self, path: Path, image: LoadedImage) -> None:
        if path == self.current:
            self._show(path, image)

    def _on_ready(self, path: Path, prepared: Prepared) -> None:
        if path != self.current:
            return
        if self.annotator.path != path:
            self._show(path, prepared.image)
        self.annotator.set_prepared(prepared)
        cached = " (cached)" if prepared.handle.from_cache else ""
        self.progress_label.setText(f"{path.name}: embedding {prepared.encode_ms:.0f} ms{cached}")

    def _on_failed(self, path: Path, message: str) -> None:
        self.messages.show_message(message)
        self.folder_list.set_status(path, "unreadable")
        if path == self.current:
            self.annotator.clear_image()
            self.panel.candidate.setText("")

    def _on_busy(self, path: Path | None) -> None:
        current = path is not None and path == self.current
        self.progress.setVisible(current)
        if current:
            self.progress_label.setText(f"computing the embedding of {path.name}…")
        elif path is not None:
            self.progress_label.setText(f"prefetching {path.name}…")

    # ------------------------------------------------------------------ window / level
    def _set_window_spins(self, window: float, level: float) -> None:
        for spin, v in ((self.window_spin, window), (self.level_spin, level)):
            spin.blockSignals(True)
            spin.setValue(int(round(v)))
            spin.blockSignals(False)

    def _on_window(self, _value: int = 0) -> None:
        self.canvas.set_lut(window_lut(self.window_spin.value(), self.level_spin.value()))

    def _auto_window(self) -> None:
        if self.annotator.image is not None and self.annotator.image.is16bit:
            self._set_window_spins(*auto_window(self.annotator.image.display))
            self._on_window()

    # ------------------------------------------------------------------ defects
    def _on_class(self, name: str) -> None:
        self.annotator.current_class = name

    def _finding_at(self, row: int):
        findings = self.annotator.findings
        return findings[row] if 0 <= row < len(findings) else None

    def _apply_class(self, row: int, name: str) -> None:
        f = self._finding_at(row)
        if f is not None:
            self.annotator.set_class(f, name)

    def _delete_row(self, row: int) -> None:
        f = self._finding_at(row)
        if f is not None:
            self.annotator.delete(f)

    def delete_selected(self) -> None:
        row = self.panel.selected_row()
        if row is not None:
            self._delete_row(row)

    def _refresh_defects(self) -> None:
        an = self.annotator
        stored = None if an.inspection is None else an.inspection.verdict
        live = an.live_verdict() if an.image is not None else None
        self.panel.show_defects(an.findings, live, stored)

    def finish_and_next(self) -> None:
        if self.annotator.finish() is not None:
            self.next_image()

    # ------------------------------------------------------------------ misc
    def _on_hover(self, x: float, y: float) -> None:
        image = self.annotator.image
        if image is None:
            return
        c, r = int(np.floor(x)), int(np.floor(y))
        h, w = image.size
        if 0 <= r < h and 0 <= c < w:
            v = image.display[r, c]
            value = str(int(v)) if np.ndim(v) == 0 else ",".join(str(int(t)) for t in v)
            self.pixel_label.setText(f"x {c} y {r}: {value}")

    def _on_latency(self, decode_ms: float, paint_ms: float) -> None:
        self.latency_label.setText(f"decode {decode_ms:.0f} ms · prompt to mask {paint_ms:.0f} ms")

    def choose_folder(self) -> None:
        start = str(self.folder or self.settings.last_folder or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of part photos", start)
        if folder:
            self.open_folder(Path(folder))

    def choose_recipe(self) -> None:
        start = str(self.settings.last_recipe or self.folder or Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open a recipe", start, "Recipes (*.toml)")
        if path:
            self.load_recipe(Path(path))

    def choose_export(self) -> None:
        if self.folder is None:
            return
        out = QFileDialog.getExistingDirectory(self, "Export annotations to",
                                               str(self.folder))
        if out:
            self.export_to(Path(out))

    def export_to(self, out: Path) -> ExportSummary | None:
        """Write the current folder's stored annotations (COCO JSON + PNG label maps)."""
        try:
            inspections = [i for p in self.paths if (i := self.autosave.load(p)) is not None]
            summary = export_folder(inspections, out)
        except (StoreError, OSError) as exc:
            self.messages.show_message(f"export failed: {exc}")
            return None
        self.statusBar().showMessage(
            f"exported {summary.defects} defects of {summary.images} images to "
            f"{summary.coco_path} and {summary.masks_dir}", 10_000)
        return summary

    def show_report(self) -> ReportDialog | None:
        """The report panel for the current image, from what the store holds for it."""
        inspection = None if self.current is None else self.autosave.load(self.current)
        if inspection is None:
            self.messages.show_message("no inspection stored for this image yet: accept a "
                                       "defect or finish the image (Ctrl+Enter) first")
            return None
        try:
            dialog = ReportDialog(inspection, self.autosave.recipe, None, self)
        except Exception as exc:  # the window keeps working whatever the report does
            self.messages.show_message(f"report could not be made: {exc}")
            return None
        dialog.open()
        return dialog

    def show_about(self) -> None:
        AboutDialog(self).exec()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.sync()
        # every accepted defect is already stored; an encoder job cannot be interrupted, so do
        # not wait long for it (main() exits the process if a thread is still running)
        self.clean_shutdown = self.host.shutdown(wait_ms=3000)
        self.store.close()
        super().closeEvent(event)

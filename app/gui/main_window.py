"""The inspector's main window: menus, folder dock, canvas, defect panel, toolbar, status bar.

Keys (defaults; the settings file's [shortcuts] group changes them, F1 lists them): PageDown/Right
next image, PageUp/Left previous; left click positive point, right click or Shift+click negative
point, drag box, Alt+click selects an accepted defect; Tab / Shift+Tab cycle candidates, 1/2/3
pick one; Enter accept, Esc clear prompts, H hides the prompt markers; Ctrl+1..9 defect class;
Ctrl+Z undo, Ctrl+Shift+Z redo; Delete removes the selected defect; Ctrl+Enter finishes the image
(stores PASS/FAIL; an image nobody prompted on asks first) and moves on, Ctrl+Shift+Enter
finishes it as "no defects"; Ctrl+F finds defects of the current class, Ctrl+Shift+F finds
similar ones across the folder, A / R / N accept, reject or skip the current proposal (Enter and
Delete too, when no prompt is given and no defect selected); F fits the image, wheel zooms at
the cursor, middle or Ctrl+drag pans; Ctrl+Q quits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QStandardPaths, Qt
from PySide6.QtGui import QAction, QFontMetrics, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.about_dialog import AboutDialog
from app.gui.annotator import Annotator, measurement_lines
from app.gui.autosave import Autosave, Station
from app.gui.canvas import Canvas, Overlay
from app.gui.defect_panel import DefectPanel
from app.gui.export import ExportSummary, export_folder
from app.gui.file_dialog import file_dialog, get_existing_directory, get_open_file_name
from app.gui.find_actions import FindController
from app.gui.folder_dock import FolderList
from app.gui.images import LoadedImage, auto_window, list_images, window_lut
from app.gui.options import GuiOptions
from app.gui.report_dialog import ReportDialog
from app.gui.settings import Settings
from app.gui.tune_dialog import TuneController
from app.gui.workers import EngineHost, Prepared
from app.inspection.recipe import Recipe, load_recipe
from app.store import InspectionStore, StoreError
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

DB_NAME = "inspections.db"


def default_db_path() -> Path:
    """inspections.db in the user data folder (app.shell.paths when present, else Qt's)."""
    try:
        from app.shell.paths import user_data_dir

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
    (ONNX exports, lite flavour) when app.shell.engine_choice is there and no model was named."""

    def build():
        if options.model is None and options.checkpoint is None:
            try:
                from app.shell.engine_choice import DESKTOP_ENGINES, load_desktop_engine
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


STYLES = {
    "error": "MessageBar { background: #fde2e1; border: 1px solid #cf222e; }"
             "QLabel { color: #82071e; }",
    "warning": "MessageBar { background: #fff8c5; border: 1px solid #d4a72c; }"
               "QLabel { color: #633c01; }",
    "info": "MessageBar { background: #ddf4ff; border: 1px solid #54aeff; }"
            "QLabel { color: #0a3069; }",
}
IMAGE = "image"  # a message about the image shown: it goes when another image is opened
GLOBAL = "global"  # about the engine, the database, ...: it stays until closed


class MessageBar(QFrame):
    """Messages in the window (not modal): the inspector reads them and keeps working. Errors
    are red, warnings yellow, results of actions (export) blue; optional buttons act on them."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        self.buttons = QHBoxLayout()
        row.addLayout(self.buttons)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("close this message")
        close.clicked.connect(self.hide)
        row.addWidget(close)
        self.kind, self.scope = "error", GLOBAL
        self.setStyleSheet(STYLES["error"])
        self.hide()

    def show_message(self, text: str, kind: str = "error", scope: str = GLOBAL,
                     actions: tuple[tuple[str, Callable[[], None]], ...] = ()) -> None:
        self.kind, self.scope = kind, scope
        self.setStyleSheet(STYLES[kind])
        self.label.setText(text)
        while self.buttons.count():
            widget = self.buttons.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        for label, slot in actions:
            button = QPushButton(label)
            button.clicked.connect(slot)
            self.buttons.addWidget(button)
        self.show()

    def clear_scope(self, scope: str) -> None:
        if self.isVisible() and self.scope == scope:
            self.hide()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class ElidedLabel(QLabel):
    """A status-bar label that elides a long text (the whole text is its tooltip)."""

    def __init__(self, text: str = "", max_width: int = 360) -> None:
        super().__init__()
        self.setMaximumWidth(max_width)
        self.full_text = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt override)
        self.full_text = text
        self.setToolTip(text)
        shown = QFontMetrics(self.font()).elidedText(text, Qt.TextElideMode.ElideRight,
                                                     self.maximumWidth())
        super().setText(shown)


class ShortcutSheet(QDialog):
    """Help > Keyboard shortcuts (F1): every action, its keys and its name in the settings."""

    def __init__(self, rows: list[tuple[str, str, str]], settings_file: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        layout = QVBoxLayout(self)
        mouse = QLabel(
            "<b>Mouse</b>: left click = positive point · right click or Shift+click = negative "
            "point · drag = box · Alt+click = select an accepted defect · wheel = zoom · "
            "middle or Ctrl+drag = pan")
        mouse.setWordWrap(True)
        layout.addWidget(mouse)
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(("Action", "Keys", "Settings name"))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(QFontMetrics(self.font()).height() + 6)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(text))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.table, 1)
        note = QLabel(f"Change a shortcut in the [shortcuts] group of {settings_file}, e.g. "
                      "<tt>finish=Ctrl+Return</tt> (an empty value removes it), then restart.")
        note.setWordWrap(True)
        note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(620, 720)


class MainWindow(QMainWindow):
    """The window; every action is a named QAction (actions_by_name) in a menu, most in the
    toolbar, with keys from the settings file's [shortcuts] group or the defaults."""

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
        self.recipe_path: Path | None = None
        self._engine_factory_used_fallback = False
        self.actions_by_name: dict[str, QAction] = {}

        self.messages = MessageBar()
        self.recipe_banner = MessageBar()
        self.store = self._open_store()
        self.autosave = Autosave(self.store, None, Station(self.options.operator,
                                                           self.options.station,
                                                           self.options.lot))
        self.host = EngineHost(self.options.prefetch, self)
        self.canvas = Canvas()
        self.annotator = Annotator(self.canvas, self.host, self.autosave, self)
        self.folder_list = FolderList()
        self.panel = DefectPanel(self.autosave.class_names)
        self.tuning = TuneController(self)
        self.finding = FindController(self)

        self._build_layout()
        self._build_status_bar()
        self._build_actions()
        self._build_menus()
        self._connect()
        self._restore_window()

        self.engine_factory = engine_factory or default_engine_factory(self.options)
        self.host.load_engine(self.engine_factory)
        if self.options.recipe is not None:
            self.load_recipe(self.options.recipe)
        folder = self.options.folder or self.settings.last_folder
        if folder is not None and Path(folder).is_dir():
            self.open_folder(Path(folder))
        elif self.autosave.recipe is None and self.settings.last_recipe is not None:
            self.load_recipe(self.settings.last_recipe)
        self._refresh_defects()

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
        col.addWidget(self.recipe_banner)
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
        self.docks = (left, right)
        self.splitDockWidget(right, self.finding.dock, Qt.Orientation.Vertical)
        self.finding.dock.hide()  # shown by the first Find (or the saved window state)
        self.resize(1400, 900)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.engine_label = ElidedLabel("loading engine…")
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

    def _action(self, name: str, text: str, keys, slot, tip: str = "") -> QAction:
        """An action with its default keys, unless the settings file's [shortcuts] group sets
        its own (labelme-style)."""
        defaults = tuple(QKeySequence(k).toString(QKeySequence.SequenceFormat.PortableText)
                         if isinstance(k, QKeySequence.StandardKey) else str(k)
                         for k in (keys if isinstance(keys, list | tuple) else
                                   ([keys] if keys else [])))
        configured = self.settings.shortcuts(name)
        chosen = defaults if configured is None else tuple(configured)
        action = QAction(text, self)
        action.setObjectName(name)
        if chosen:
            action.setShortcuts([QKeySequence(k) for k in chosen])
        shown = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText)
                          for s in action.shortcuts())
        action.setToolTip(f"{tip or text} ({shown})" if shown else tip or text)
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        self.addAction(action)
        self.actions_by_name[name] = action
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_open = a("open_folder", "&Open folder…", QKeySequence.StandardKey.Open,
                          self.choose_folder, "open a folder of part photos")
        self.act_recipe = a("open_recipe", "Open &recipe…", "Ctrl+R", self.choose_recipe,
                            "load the recipe (classes, calibration, tolerances)")
        self.act_export = a("export", "&Export…", "Ctrl+E", self.choose_export,
                            "export this folder's annotations (COCO JSON + PNG masks)")
        self.act_report = a("report", "Re&port…", "Ctrl+Shift+R", self.show_report,
                            "the current image's inspection report (preview, save as PDF)")
        self.act_quit = a("quit", "&Quit", "Ctrl+Q", self.close, "close the window")
        self.act_prev = a("previous_image", "&Previous image", ["PgUp", "Left"],
                          self.previous_image, "previous image")
        self.act_next = a("next_image", "&Next image", ["PgDown", "Right"], self.next_image,
                          "next image")
        self.act_fit = a("fit", "&Fit", ["F", "Home"], self.canvas.fit,
                         "fit the image to the window")
        self.act_zoom_in = a("zoom_in", "Zoom &in", ["+", "="], lambda: self.canvas.zoom_by(1.25))
        self.act_zoom_out = a("zoom_out", "Zoom &out", "-", lambda: self.canvas.zoom_by(0.8))
        # fixed texts (the toolbar must not move as the undo text changes): the step that
        # would be undone / redone is in the tooltip and the status tip
        undo = self.annotator.undo
        self.act_undo = a("undo", "&Undo", QKeySequence.StandardKey.Undo, undo.undo,
                          "undo the last step")
        self.act_redo = a("redo", "&Redo", ["Ctrl+Shift+Z", "Ctrl+Y"], undo.redo,
                          "redo the step undone")
        undo.canUndoChanged.connect(self.act_undo.setEnabled)
        undo.canRedoChanged.connect(self.act_redo.setEnabled)
        undo.undoTextChanged.connect(lambda t: self._step_tip(self.act_undo, "undo", t))
        undo.redoTextChanged.connect(lambda t: self._step_tip(self.act_redo, "redo", t))
        self.act_undo.setEnabled(False)
        self.act_redo.setEnabled(False)
        self.act_accept = a("accept", "&Accept", ["Return", "Enter"], self.accept_masks,
                            "accept the mask(s) as defects")
        self.act_clear = a("clear", "&Clear prompts", "Esc", self.annotator.clear_prompts,
                           "clear the prompts")
        self.act_finish = a("finish", "&Finish", ["Ctrl+Return", "Ctrl+Enter"],
                            self.finish_and_next, "store PASS/FAIL and go to the next image")
        self.act_no_defects = a("finish_no_defects", "Finish: &no defects",
                                ["Ctrl+Shift+Return", "Ctrl+Shift+Enter"], self.finish_no_defects,
                                "record that the image has no defects (PASS) and go on")
        self.act_delete = a("delete", "&Delete defect", "Del", self.delete_selected,
                            "delete the selected defect")
        self.act_next_candidate = a("next_candidate", "Next candidate", "Tab",
                                    lambda: self.annotator.cycle(1))
        self.act_prev_candidate = a("previous_candidate", "Previous candidate", "Shift+Tab",
                                    lambda: self.annotator.cycle(-1))
        self.candidate_actions = [
            a(f"candidate_{c + 1}", f"Candidate {c + 1}", str(c + 1),
              lambda _=False, c=c: self.annotator.choose(c)) for c in range(3)]
        self.class_actions = [
            a(f"class_{k + 1}", f"Class {k + 1}", f"Ctrl+{k + 1}",
              lambda _=False, k=k: self.panel.choose_class(k)) for k in range(9)]
        self.act_prompts = a("toggle_prompts", "Show &prompt markers", "H",
                             self._toggle_prompts, "show or hide the click and box markers")
        self.act_prompts.setCheckable(True)
        self.act_prompts.setChecked(True)
        self.act_zones = a("toggle_zones", "Show &zones and datum", "Z", self._toggle_zones,
                           "show or hide the recipe's forbidden zones and datum")
        self.act_zones.setCheckable(True)
        self.act_zones.setChecked(True)
        self.act_select = a("select_mode", "&Select mode", "S", self._toggle_select,
                            "clicks select accepted defects instead of adding points "
                            "(Alt+click always selects)")
        self.act_select.setCheckable(True)
        self.act_shortcuts = a("shortcuts", "&Keyboard shortcuts", "F1", self.show_shortcuts,
                               "every shortcut, and how to change them")
        self.act_about = a("about", "&About", None, self.show_about)
        self.act_tune = a("tune", "&Tune on accepted defects…", None, self.tuning.start,
                          "tune the learned engine on the defects accepted for this recipe "
                          "(runs in the background; used only when it beats the current model)")
        self.act_demote = a("use_previous_model", "Use &previous model", None,
                            self.tuning.use_previous,
                            "go back to the model this recipe used before its last promotion")
        find, review = self.finding, self.finding.review
        self.act_find = a("find", "&Find", "Ctrl+F", find.find_current,
                          "find defects of the current class on this image")
        self.act_find_similar = a("find_similar", "Find &similar in folder", "Ctrl+Shift+F",
                                  find.find_similar, "propose defects like the accepted ones "
                                  "of the current class on every image of the folder")
        self.act_queue_accept = a("accept_proposal", "&Accept proposal", "A", review.accept,
                                  "accept the current proposal as a defect")
        self.act_queue_reject = a("reject_proposal", "&Reject proposal", ["R", "Backspace"],
                                  review.reject, "reject the current proposal")
        self.act_queue_skip = a("skip_proposal", "S&kip proposal", ["N", "Space"], review.skip,
                                "leave the current proposal for later, show the next one")

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
        self.addToolBar(tools)
        self.toolbar = tools
        for act in tools.actions():  # equal-width buttons that never move
            button = tools.widgetForAction(act)
            if isinstance(button, QToolButton):
                button.setFixedWidth(max(button.sizeHint().width(), 64))

    def _step_tip(self, action: QAction, verb: str, step: str) -> None:
        keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText)
                         for s in action.shortcuts())
        what = f"{verb} {step}" if step else f"nothing to {verb}"
        action.setToolTip(f"{what} ({keys})" if keys else what)
        action.setStatusTip(what)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        for act in (self.act_open, self.act_recipe, None, self.act_export, self.act_report, None,
                    self.act_quit):
            file.addSeparator() if act is None else file.addAction(act)
        edit = bar.addMenu("&Edit")
        for act in (self.act_undo, self.act_redo, None, self.act_accept, self.act_clear,
                    self.act_delete, None, self.act_next_candidate, self.act_prev_candidate,
                    *self.candidate_actions, None, self.act_finish, self.act_no_defects):
            edit.addSeparator() if act is None else edit.addAction(act)
        self.class_menu = edit.addMenu("Defect &class")
        view = bar.addMenu("&View")
        for act in (self.act_prev, self.act_next, None, self.act_fit, self.act_zoom_in,
                    self.act_zoom_out, None, self.act_prompts, self.act_zones, self.act_select,
                    None, *(d.toggleViewAction() for d in self.docks)):
            view.addSeparator() if act is None else view.addAction(act)
        inspect = bar.addMenu("&Inspect")
        for act in (self.act_find, self.act_find_similar, None, self.act_queue_accept,
                    self.act_queue_reject, self.act_queue_skip, None,
                    self.finding.dock.toggleViewAction()):
            inspect.addSeparator() if act is None else inspect.addAction(act)
        inspect.setToolTipsVisible(True)  # a disabled Find similar says why
        inspect.aboutToShow.connect(self.finding.refresh_actions)
        self.inspect_menu = inspect
        tools = bar.addMenu("&Tools")
        tools.addAction(self.act_tune)
        tools.addAction(self.act_demote)
        tools.aboutToShow.connect(self.tuning.refresh_actions)
        self.tools_menu = tools
        helpm = bar.addMenu("&Help")
        helpm.addAction(self.act_shortcuts)
        helpm.addAction(self.act_about)
        self._update_class_menu()
        self.tuning.refresh_actions()
        self.finding.refresh_actions()

    def _update_class_menu(self) -> None:
        """Class actions say which class each Ctrl+k picks (the recipe's classes)."""
        self.class_menu.clear()
        names = self.autosave.class_names
        for k, act in enumerate(self.class_actions):
            if k < len(names):
                act.setText(f"{k + 1} {names[k]}")
                act.setEnabled(True)
                self.class_menu.addAction(act)
            else:
                act.setText(f"Class {k + 1}")
                act.setEnabled(False)

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """(action, keys, settings name) of every action with a shortcut or a menu entry."""
        rows = []
        for name, act in self.actions_by_name.items():
            keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText)
                             for s in act.shortcuts())
            rows.append((act.text().replace("&", ""), keys or "–", name))
        return rows

    def show_shortcuts(self) -> ShortcutSheet:
        sheet = ShortcutSheet(self.shortcut_rows(), self.settings.file_name, self)
        sheet.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        sheet.show()
        self.shortcut_sheet = sheet
        return sheet

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
        self.canvas.defectClicked.connect(self.select_defect)
        an.candidateInfo.connect(self.panel.candidate.setText)
        an.defectsUpdated.connect(self._refresh_defects)
        an.statusChanged.connect(self.folder_list.set_status)
        an.message.connect(lambda text: self.messages.show_message(text, scope=IMAGE))
        an.latency.connect(self._on_latency)
        an.saved.connect(self._on_saved)
        self.folder_list.activatedPath.connect(self.go_to)
        self.panel.classChosen.connect(self._on_class)
        self.panel.classChosen.connect(lambda _name: self.finding.refresh_actions())
        self.panel.applyClass.connect(self._apply_class)
        self.panel.deleteRequested.connect(self._delete_number)
        self.panel.selectedChanged.connect(self._on_selected)
        self.window_spin.valueChanged.connect(self._on_window)
        self.level_spin.valueChanged.connect(self._on_window)
        self.auto_wl.clicked.connect(self._auto_window)

    def _restore_window(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    def ask(self, title: str, text: str, yes: str, no: str = "Cancel") -> bool:
        """A question the inspector must answer (modal): True for `yes`."""
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        yes_button = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
        box.addButton(no, QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(yes_button)
        box.exec()
        return box.clickedButton() is yes_button

    # ------------------------------------------------------------------ engine
    def use_engine(self, factory: Callable[[], object]) -> None:
        """Switch to another engine, built on the encoder thread; the image shown is encoded
        again by it."""
        self.engine_label.setText("loading engine…")
        self.host.load_engine(factory)

    def _on_engine(self, engine) -> None:
        """The status bar names the engine and its model version ("engine learned: site-a@3";
        the full description is the tooltip); new defects record it."""
        info = engine.info
        self.autosave.engine = info
        self.annotator.prepared = None  # an embedding of another engine: set again once encoded
        self.engine_label.setText(f"engine {info.name}: {info.model_id}")
        self.engine_label.setToolTip(f"engine {info.describe()}")

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
        self._use_recipe(recipe, Path(path))
        self.settings.last_recipe = path
        return recipe

    def _use_recipe(self, recipe: Recipe | None, path: Path | None) -> None:
        self.autosave.set_recipe(recipe)
        self.recipe_path = path
        self.panel.set_classes(self.autosave.class_names)
        self._update_class_menu()
        self.annotator.current_class = self.panel.current_class()
        self.tuning.refresh_actions()  # the previous model is the new recipe's
        if recipe is None:
            self.panel.note.setText(f"no recipe · {self.autosave.calibration_note}")
            self.canvas.set_overlay(Overlay())
        else:
            self.panel.note.setText(f"recipe {recipe.name} {recipe.version}"
                                    + (f" · {self.autosave.calibration_note}"
                                       if self.autosave.calibration_note else ""))
            datum = None if recipe.datum is None else (
                recipe.datum.kind, tuple(tuple(map(float, p)) for p in recipe.datum.points))
            self.canvas.set_overlay(Overlay(
                tuple((z.name, tuple(tuple(map(float, p)) for p in z.polygon))
                      for z in recipe.zones), datum))
        self.annotator.defects_changed()

    def _recipe_banner_for(self, folder: Path, own: Path | None) -> None:
        """Say which recipe judges this folder when it brings none, and let the inspector
        choose: a recipe inherited from another folder gives mm values and verdicts from that
        part's calibration."""
        if own is not None or self.options.recipe is not None:
            self.recipe_banner.hide()
            return
        choose = ("Choose recipe…", self.choose_recipe)
        if self.autosave.recipe is None:
            self.recipe_banner.show_message(
                f"No recipe in {folder.name}: sizes are in pixels only and any defect fails the "
                "image.", kind="warning", scope="folder", actions=(choose,))
            return
        recipe = self.autosave.recipe
        self.recipe_banner.show_message(
            f"No recipe in {folder.name}: using {recipe.name} {recipe.version} "
            f"({self.recipe_path}); its calibration gives the mm values and its tolerances the "
            "verdicts. Is it the right one for these parts?", kind="warning", scope="folder",
            actions=(choose, ("Use no recipe", self.use_no_recipe),
                     ("Keep it", self.recipe_banner.hide)))

    def use_no_recipe(self) -> None:
        self._use_recipe(None, None)
        self.recipe_banner.show_message(
            "No recipe: sizes are in pixels only and any defect fails the image.",
            kind="warning", scope="folder", actions=(("Choose recipe…", self.choose_recipe),))
        self._refresh_defects()

    # ------------------------------------------------------------------ folder, images
    def open_folder(self, folder: Path) -> None:
        try:
            paths = list_images(folder)
        except OSError as exc:
            self.messages.show_message(f"cannot list the folder {folder}: {exc}")
            return
        self.folder, self.paths = Path(folder), paths
        self.settings.last_folder = Path(folder).resolve()
        own = folder_recipe(Path(folder))
        if self.options.recipe is None:  # a recipe in the folder wins over the last one used
            recipe = own or (self.settings.last_recipe if self.autosave.recipe is None else None)
            if recipe is not None:
                self.load_recipe(recipe)
        self._recipe_banner_for(Path(folder), own)
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
        by_key = {p.resolve(): p for p in paths}
        last = self.settings.last_image
        todo = by_key.get(last.resolve()) if last is not None else None
        todo = todo or next((p for p in paths if statuses.get(p) not in ("PASS", "FAIL")),
                            paths[0])
        self.go_to(todo)

    def go_to(self, path: Path) -> None:
        if path == self.current and self.annotator.path == path:
            return
        self.messages.clear_scope(IMAGE)  # an error about the previous image is stale now
        self.current = path
        self.settings.last_image = path.resolve()
        self.folder_list.select(path)
        self.panel.choose_class(0)  # the class of the last image's defects does not carry over
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
        self.folder_list.set_status(path, "unreadable")
        if path == self.current:
            self.messages.show_message(message, scope=IMAGE)
            self.annotator.clear_image()
            self.panel.candidate.setText("")

    def _on_busy(self, path: Path | None) -> None:
        """The encoder's state, as it is now (cleared when it goes idle)."""
        current = path is not None and path == self.current
        self.progress.setVisible(current)
        if current:
            self.progress_label.setText(f"computing the embedding of {path.name}…")
        elif path is not None:
            self.progress_label.setText(f"prefetching {path.name}…")
        elif self.progress_label.text().startswith(("prefetching", "computing")):
            self.progress_label.setText("ready" if self.annotator.prepared is not None else "")

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

    # ------------------------------------------------------------------ view toggles
    def _toggle_prompts(self, checked: bool | None = None) -> None:
        self.canvas.set_show_prompts(self.act_prompts.isChecked())

    def _toggle_zones(self, checked: bool | None = None) -> None:
        self.canvas.set_show_zones(self.act_zones.isChecked())

    def _toggle_select(self, checked: bool | None = None) -> None:
        self.canvas.select_mode = self.act_select.isChecked()
        self.statusBar().showMessage(
            "select mode: a click selects an accepted defect (S to add points again)"
            if self.canvas.select_mode else "point mode: a click adds a point", 4000)

    # ------------------------------------------------------------------ defects
    def _on_class(self, name: str) -> None:
        self.annotator.current_class = name

    def _apply_class(self, number: int, name: str) -> None:
        f = self.annotator.finding_numbered(number)
        if f is not None:
            self.annotator.set_class(f, name)

    def _delete_number(self, number: int) -> None:
        f = self.annotator.finding_numbered(number)
        if f is not None:
            self.annotator.delete(f)

    def delete_selected(self) -> None:
        """Delete: the selected defect, else the current proposal of the review queue."""
        number = self.panel.selected_number()
        if number is not None:
            self._delete_number(number)
        elif self.finding.review.here():
            self.finding.review.reject()

    def select_defect(self, number: int | None) -> None:
        """Select an accepted defect by number (table row, highlight, figures by the badge)."""
        self.panel.select_number(number)
        self._on_selected(number)

    def _on_selected(self, number: int | None) -> None:
        self.canvas.set_selected(number)
        self._update_badge()

    def accept_masks(self) -> bool:
        """Enter: the prompts' masks, else the current proposal of the review queue."""
        if not self.annotator.snapshot and self.finding.review.here():
            return self.finding.review.accept()
        return self.annotator.accept(
            lambda question: self.ask("Accept a doubtful mask?", question, "Accept anyway"))

    def _refresh_defects(self) -> None:
        an = self.annotator
        stored = None if an.inspection is None else an.inspection.verdict
        worked = an.image is not None and (an.findings or an.prompted)
        live = an.live_verdict() if worked else None
        self.panel.show_defects(an.findings, live, stored)
        self._update_badge()

    def _update_badge(self) -> None:
        """The big PASS / FAIL on the image, and the selected defect's figures beside it."""
        an = self.annotator
        stored = None if an.inspection is None else an.inspection.verdict
        badge = None
        if stored is not None:
            badge = (stored.status, stored.passed)
        elif an.findings:
            live = an.live_verdict()
            badge = (f"{live.status} so far", live.passed)
        number = self.canvas.selected
        f = an.finding_numbered(number) if number is not None else None
        details = [] if f is None else measurement_lines(f, number)
        verdict = stored or (an.live_verdict() if an.findings else None)
        if f is not None and verdict is not None:
            details += [r.message for r in verdict.reasons
                        if getattr(r, "defect_number", None) == number]
        if badge is None and details:
            badge = ("not judged", True)
        self.canvas.set_verdict_badge(badge, details)

    def finish_and_next(self) -> None:
        """Ctrl+Enter: judge and store the image, then the next one. An image nobody prompted
        on and with no defects is finished only once the inspector confirms it has none."""
        an = self.annotator
        if an.image is None:
            return
        how = "reviewed"
        if an.untouched():
            name = self.current.name if self.current is not None else "this image"
            if not self.ask("Finish without any defect?",
                            f"Nothing was marked on {name}. Record it as PASS, with no defects?",
                            "No defects: PASS"):
                return
            how = "no defects confirmed"
        if an.finish(how) is not None:
            self.next_image()

    def finish_no_defects(self) -> None:
        """Ctrl+Shift+Enter: the inspector says the image has no defects (PASS)."""
        an = self.annotator
        if an.image is None:
            return
        if an.findings:
            self.messages.show_message(
                f"{len(an.findings)} defect(s) are marked on this image: delete them first, or "
                "finish with Ctrl+Enter", kind="warning", scope=IMAGE)
            return
        if an.finish("no defects confirmed") is not None:
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

    def _on_saved(self, ok: bool, message: str) -> None:
        """The database label says whether the last write reached the disk (it stays red until
        a write succeeds)."""
        if ok:
            self.db_label.setText(f"saving to {Path(self.db_location).name}")
            self.db_label.setStyleSheet("")
        else:
            self.db_label.setText("NOT SAVED")
            self.db_label.setStyleSheet("QLabel { color: white; background: #cf222e; "
                                        "font-weight: bold; padding: 0 6px; }")
            self.db_label.setToolTip(f"{message}\ninspection database: {self.db_location}")

    def _on_latency(self, decode_ms: float, paint_ms: float) -> None:
        self.latency_label.setText(f"decode {decode_ms:.0f} ms · prompt to mask {paint_ms:.0f} ms")

    def choose_folder(self) -> None:
        start = str(self.folder or self.settings.last_folder or Path.home())
        folder = get_existing_directory(self, "Open a folder of part photos", start)
        if folder:
            self.open_folder(Path(folder))

    def choose_recipe(self) -> None:
        start = str(self.folder or self.settings.last_recipe or Path.home())
        path = get_open_file_name(self, "Open a recipe", start, "Recipes (*.toml)")
        if path:
            if self.load_recipe(Path(path)) is not None:
                self.recipe_banner.hide()
            self._refresh_defects()

    def choose_export(self) -> None:
        if self.folder is None:
            self.messages.show_message("open a folder first (File > Open folder, Ctrl+O)",
                                       kind="warning")
            return
        dialog = self.export_dialog()
        try:
            if dialog.exec() == QFileDialog.DialogCode.Accepted and dialog.selectedFiles():
                self.export_to(Path(dialog.selectedFiles()[0]))
        finally:
            dialog.deleteLater()

    def export_dialog(self) -> QFileDialog:
        """The export folder dialog: in "any file" mode it takes a typed name of a folder that
        does not exist yet (a directory dialog refuses it); export_to creates the folder."""
        dialog = file_dialog(self, "Export annotations to (a new folder name is created)",
                             str(self.folder))
        dialog.setFileMode(QFileDialog.FileMode.AnyFile)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dialog.setLabelText(QFileDialog.DialogLabel.Accept, "Export here")
        return dialog

    def export_to(self, out: Path) -> ExportSummary | None:
        """Write the current folder's stored annotations (COCO JSON + PNG label maps) into
        `out` (created when it does not exist); the result stays in a banner until closed."""
        try:
            out.mkdir(parents=True, exist_ok=True)
            inspections = [i for p in self.paths if (i := self.autosave.load(p)) is not None]
            summary = export_folder(inspections, out)
        except (StoreError, OSError) as exc:
            self.messages.show_message(f"export to {out} failed: {exc}")
            return None
        text = (f"Exported {summary.defects} defects of {summary.images} images to "
                f"{summary.coco_path} and {summary.masks_dir}")
        self.messages.show_message(text, kind="info", scope=GLOBAL)
        self.statusBar().showMessage(text, 10_000)
        return summary

    def show_report(self) -> ReportDialog | None:
        """The report panel for the current image, from what the store holds for it."""
        if self.current is None:
            self.messages.show_message("no image is open: open a folder of part photos first "
                                       "(File > Open folder, Ctrl+O)", kind="warning")
            return None
        inspection = self.autosave.load(self.current)
        if inspection is None:
            self.messages.show_message("no inspection stored for this image yet: accept a "
                                       "defect or finish the image (Ctrl+Enter) first",
                                       kind="warning", scope=IMAGE)
            return None
        try:
            dialog = ReportDialog(inspection, self.autosave.recipe, None, self)
        except Exception as exc:  # the window keeps working whatever the report does
            self.messages.show_message(f"report could not be made: {exc}", scope=IMAGE)
            return None
        dialog.folder = self.current.parent  # Save starts in the image's folder
        dialog.open()
        return dialog

    def show_about(self) -> None:
        AboutDialog(self).exec()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.sync()
        # every accepted defect is already stored; an encoder job cannot be interrupted, so do
        # not wait long for it (main() exits the process if a thread is still running)
        self.clean_shutdown = self.tuning.shutdown(wait_ms=3000)  # stops at its next step
        self.clean_shutdown &= self.finding.shutdown(wait_ms=3000)
        self.clean_shutdown &= self.host.shutdown(wait_ms=3000)
        self.store.close()
        super().closeEvent(event)

"""Tools > Tune on accepted defects… and Tools > Use previous model, in the window.

TuneController runs app.tuning on the window's inspection store (the accepted defects of the
current recipe) on a worker thread (workers.TuneRunner) while a progress dialog shows the steps,
the time left and a Cancel button; the result dialog shows the held-out mean IoU before and after
and the promotion gate's reason. A promoted model becomes the window's engine (load_registered on
the encoder thread). "Use previous model" steps the recipe's promotion back one (registry.demote)
and reloads the engine: the previous tuned model, or the window's default engine.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.gui.workers import CANCELLED, NO_DATA, TuneRunner
from sam_engine.errors import CheckpointError
from sam_engine.learned import registry


@dataclass(frozen=True)
class TuneJob:
    """What the window tunes: the store's accepted defects of one recipe, as model `name`."""

    db: str
    recipe: str  # the recipe's part name ("" = no recipe: every accepted defect)
    name: str


def model_name(recipe: str) -> str:
    """The tuned model's name: the recipe's part name as a folder name, else 'site' (as the
    `sam-inspect tune` command names it)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", recipe).strip("-.") or "site"


def in_memory(db: str) -> bool:
    """True for an SQLite in-memory database, which a second connection cannot read."""
    return db.startswith("sqlite://") and (not db[len("sqlite://"):].startswith("/")
                                           or db.endswith(":memory:"))


def checkpoint_dir() -> Path:
    """Where interrupted tunes keep their checkpoint (shared with `sam-inspect tune`)."""
    return registry.registry_root() / ".checkpoints"


def run_tune(job: TuneJob, on_step: Callable[[int, int], None],
             on_phase: Callable[[str], None]):
    """Read the accepted defects and tune (on the worker thread); returns the TuneOutcome.
    Raises DataError when there is nothing to learn from."""
    from app.tuning.sources import StoreFilter, read_store

    on_phase("reading the accepted defects from the inspection database…")
    data = read_store(job.db, StoreFilter(recipe=job.recipe or None))
    from app.tuning.run import TuneRequest, tune  # PyTorch: only once there is data
    from sam_engine.learned.train import TrainSettings

    on_phase(f"{len(data.images)} images, {data.n_instances} accepted defects: measuring the "
             "engine in use on the held-out images…")
    # the settings `sam-inspect tune` uses by default, so either resumes the other's checkpoint
    settings = TrainSettings(steps=800, batch=24, lr=1e-3, seed=0)
    request = TuneRequest(data=data, name=job.name, recipe=job.recipe, settings=settings,
                          checkpoint_dir=checkpoint_dir())
    return tune(request, progress=False, on_step=on_step)


def learned_engine_factory(folder: str | Path) -> Callable[[], object]:
    """Builds the engine of a registry folder: a learned model or a tuned SAM checkpoint
    (called on the encoder thread)."""

    def build():
        from app.tuning.run import load_registered

        return load_registered(Path(folder))

    return build


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


class TuneProgressDialog(QDialog):
    """Steps done of the total, the time left and Cancel (closing the dialog cancels too)."""

    cancelRequested = Signal()

    def __init__(self, what: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Tuning on accepted defects")
        layout = QVBoxLayout(self)
        self.what = QLabel(what)
        self.what.setWordWrap(True)
        self.phase = QLabel("starting…")
        self.phase.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until the first training step
        self.steps = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.reject)
        for w in (self.what, self.phase, self.bar, self.steps):
            layout.addWidget(w)
        layout.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignRight)
        self._first: tuple[int, float] | None = None  # (step, time) of the first step seen
        self.resize(460, 0)

    def set_phase(self, text: str) -> None:
        self.phase.setText(text)

    def set_step(self, step: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (step, now)
            self.phase.setText("training on the accepted defects…")
        first, t0 = self._first
        rate = (now - t0) / (step - first) if step > first else math.nan
        self.bar.setRange(0, total)
        self.bar.setValue(step)
        eta = format_eta(rate * (total - step))
        self.steps.setText(f"step {step} / {total}" + (f" · {eta}" if eta else ""))
        if step >= total:
            self.phase.setText("measuring the tuned model on the held-out images…")
            self.cancel_button.setEnabled(False)

    def reject(self) -> None:
        """Cancel: the job stops at its next training step (the dialog stays until it has)."""
        if self.cancel_button.isEnabled():
            self.cancel_button.setEnabled(False)
            self.phase.setText("cancelling at the next training step…")
            self.cancelRequested.emit()


class TuneResultDialog(QDialog):
    """Held-out mean IoU (box, click) before and after, and whether the model was promoted."""

    def __init__(self, outcome, recipe: str, kept: str = "", parent=None) -> None:
        """kept: why the window did not switch to a promoted model ("" when it did)."""
        super().__init__(parent)
        self.setWindowTitle("Tuning result")
        layout = QVBoxLayout(self)
        model = outcome.manifest.model_id
        n = len(outcome.after.classes)
        layout.addWidget(QLabel(f"Held-out mean IoU on {n} accepted defects never trained on:"))
        self.table = QTableWidget(2, 3)
        self.table.setHorizontalHeaderLabels(("model", "box", "click"))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        rows = ((f"before: {outcome.current}", outcome.before),
                (f"after: {model}", outcome.after))
        for i, (label, held) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(label))
            for j, kind in enumerate(("box", "point"), start=1):
                self.table.setItem(i, j, QTableWidgetItem(f"{held.mean(kind):.3f}"))
        self.table.resizeColumnsToContents()
        layout.addWidget(self.table)
        part = f"recipe {recipe}" if recipe else "the default (no recipe)"
        if outcome.promoted:
            verdict = f"<b>Promoted</b>: {model} is now the model of {part}"
            verdict += (f"; the window goes on with its engine ({kept})." if kept
                        else " and the window uses it.")
        else:
            verdict = (f"<b>Not promoted</b>: {model} is kept in the registry, unused; the "
                       "window goes on with its engine.")
        self.verdict = QLabel(verdict)
        self.verdict.setWordWrap(True)
        self.reason = QLabel(f"Gate: {outcome.reason}")
        self.reason.setWordWrap(True)
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.verdict)
        layout.addWidget(self.reason)
        if outcome.problems:
            skipped = QLabel(f"{len(outcome.problems)} defects or images skipped:\n  "
                             + "\n  ".join(outcome.problems[:5]))
            skipped.setWordWrap(True)
            layout.addWidget(skipped)
        folder = QLabel(f"model folder: {outcome.folder}")
        folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(folder)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 0)

    def figures(self) -> list[list[str]]:
        """The table's rows as shown (model, box, click)."""
        return [[self.table.item(i, j).text() for j in range(3)]
                for i in range(self.table.rowCount())]


class TuneController(QObject):
    """The window's tuning: start / cancel a tune, show its result, go back one model.

    The window gives: `db_location`, `autosave.recipe`, `engine_factory` (its default engine),
    `use_engine(factory)` and the two actions, which this keeps enabled as they apply."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.runner = TuneRunner(self)
        self.job: TuneJob | None = None
        self.progress_dialog: TuneProgressDialog | None = None
        self.result_dialog: TuneResultDialog | None = None
        self.closing = False  # the window is closing: a job's end shows nothing
        self.runner.progress.connect(self._on_progress)
        self.runner.phase.connect(self._on_phase)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)

    @property
    def recipe(self) -> str:
        recipe = self.window.autosave.recipe
        return "" if recipe is None else recipe.name

    def refresh_actions(self) -> None:
        """Tune: enabled unless a tune runs or the database is in memory; Use previous
        model: enabled when the recipe has a promoted model."""
        w, idle = self.window, not self.runner.running
        w.act_tune.setEnabled(idle and not in_memory(w.db_location))
        try:
            promoted = registry.promoted_for(self.recipe)
        except CheckpointError:  # a damaged promotions file: the action says so when used
            promoted, damaged = None, True
        else:
            damaged = False
        w.act_demote.setEnabled(idle and (damaged or promoted is not None))
        w.act_demote.setStatusTip(
            f"go back from {promoted.model_id} to the model used before it" if promoted
            else "go back to the model this recipe used before its last promotion")

    # ------------------------------------------------------------------ tune
    def start(self) -> None:
        """Tools > Tune on accepted defects…: read, tune and gate on a worker thread."""
        if self.runner.running:
            if self.progress_dialog is not None:
                self.progress_dialog.raise_()
            return
        w = self.window
        if in_memory(w.db_location):
            QMessageBox.information(w, "Nothing to tune on", "This session's database is in "
                                    "memory: restart with --db PATH to keep and learn from "
                                    "accepted defects.")
            return
        recipe = self.recipe
        self.job = TuneJob(db=w.db_location, recipe=recipe, name=model_name(recipe))
        what = (f"Tuning {self.job.name} on the defects accepted for recipe {recipe} in "
                f"{w.db_location}" if recipe else
                f"Tuning {self.job.name} on every accepted defect in {w.db_location} (no "
                "recipe loaded)")
        self.progress_dialog = TuneProgressDialog(what, w)
        self.progress_dialog.cancelRequested.connect(self.runner.cancel)
        self.progress_dialog.show()
        job = self.job
        self.runner.start(lambda on_step, on_phase: run_tune(job, on_step, on_phase))
        self.refresh_actions()

    def _on_progress(self, step: int, total: int) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.set_step(step, total)

    def _on_phase(self, text: str) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.set_phase(text)

    def _close_progress(self) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.hide()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None
        self.refresh_actions()

    def _on_failed(self, kind: str, message: str) -> None:
        if self.closing:
            return
        self._close_progress()
        w = self.window
        if kind == NO_DATA:
            QMessageBox.information(w, "Nothing to tune on", message)
        elif kind == CANCELLED:
            QMessageBox.information(
                w, "Tuning cancelled",
                f"Tuning {message}. Nothing changed: the window keeps its engine. The tune is "
                "resumable: Tools > Tune on accepted defects… on the same defects goes on from "
                "its last checkpoint.")
        else:
            QMessageBox.warning(w, "Tuning failed", message)

    def _on_finished(self, outcome) -> None:
        if self.closing:
            return
        self._close_progress()
        job, recipe = self.job, self.window.autosave.recipe
        pin = None if recipe is None else recipe.model
        same = job is not None and job.recipe == self.recipe
        switched = bool(outcome.promoted and same and pin is None)
        if switched:
            self.window.use_engine(learned_engine_factory(outcome.folder))
        if self.result_dialog is not None:
            self.result_dialog.deleteLater()
        kept = ("" if switched or not outcome.promoted else
                f"the recipe pins {pin.name}, which the window keeps" if same and pin else
                "another recipe is loaded now")
        self.result_dialog = TuneResultDialog(outcome, job.recipe if job else "", kept,
                                              self.window)
        self.result_dialog.show()
        self.refresh_actions()

    # ------------------------------------------------------------------ demote
    def use_previous(self) -> bool:
        """Tools > Use previous model: after a confirmation, the recipe's promotion goes back
        one step and the window reloads its engine. True when it did."""
        w, recipe = self.window, self.recipe
        part = f"recipe {recipe}" if recipe else "the default (no recipe)"
        try:
            now = registry.promoted_for(recipe)
        except CheckpointError as exc:
            QMessageBox.warning(w, "Use previous model", str(exc))
            return False
        if now is None:
            QMessageBox.information(w, "Use previous model",
                                    f"No tuned model is promoted for {part}: the window uses "
                                    "its default engine.")
            self.refresh_actions()
            return False
        if not w.ask("Use the previous model?",
                     f"{part[0].upper()}{part[1:]} uses the tuned model {now.model_id}. Go "
                     "back to the model it used before (the previous tuned model, or the "
                     "default engine)? The tuned model stays in the registry.",
                     "Use previous model"):
            return False
        try:
            previous = registry.demote(recipe)
            factory = (w.engine_factory if previous is None
                       else learned_engine_factory(registry.resolve(previous.model_id)))
        except CheckpointError as exc:
            QMessageBox.warning(w, "Use previous model", str(exc))
            self.refresh_actions()
            return False
        w.use_engine(factory)
        w.statusBar().showMessage(
            f"{part} now uses {previous.model_id if previous else 'the default engine'}",
            10_000)
        self.refresh_actions()
        return True

    def shutdown(self, wait_ms: int | None = None) -> bool:
        """The window closes: cancel a running tune (it stops at its next step; what it had
        reached stays in its checkpoint); True when it ended."""
        self.closing = True
        return self.runner.shutdown(wait_ms)

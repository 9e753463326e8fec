"""Inspect > Find <class> (Ctrl+F) and Inspect > Find similar in folder (Ctrl+Shift+F).

Find runs the trained finder on the current image; Find similar learns the current class from its
accepted defects (this session's and the stored ones on the folder's images) and proposes more
like them on every image of the folder. Both run on a worker thread (FindRunner: one job at a
time, on a thread that ends with it), with a progress bar and Cancel in the review queue dock;
each image's proposals join the queue (find_queue) as they come.

The models are injected: find_fn(rgb, cls, recipe) -> FindResult, raising NoFinder(message)
when no trained finder knows the class; teach_fn(examples: list[Example]) -> a model with
find(rgb, wanted=[cls]) -> list[Found] (model_id and n_examples are read when it has them).
default_find (app.finding) and default_teach (sam_engine.finder.fewshot) are the real ones.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDockWidget

from app.gui.find_queue import ReviewQueue
from app.gui.images import load_for_display
from app.gui.workers import CANCELLED, ERROR, JobCancelled, JobRunner, describe_error
from app.store import StoreError
from sam_engine.errors import SamEngineError
from sam_engine.finder.types import FindResult

NO_FINDER = "no finder"


class NoFinder(Exception):
    """No finder knows the class: the message says what to do instead."""


@dataclass(frozen=True)
class Example:
    """One accepted defect to learn from: its image (RGB uint8), bool mask and class."""

    rgb: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    cls: str


@dataclass(frozen=True)
class FindSummary:
    """What a job did: images looked at, defects found, the model, images it could not read."""

    images: int
    found: int
    model_id: str
    examples: int = 0
    unreadable: tuple[str, ...] = ()


FindFn = Callable[[np.ndarray, str, object], FindResult]
TeachFn = Callable[[Sequence[Example]], object]


def default_find(rgb: np.ndarray, cls: str, recipe) -> FindResult:
    """app.finding's plan for `cls` run on one image (its FindError becomes NoFinder)."""
    from app.finding.plan import FindError, find_defects, plan_find

    try:
        plan = plan_find([cls], recipe=recipe)
    except FindError as exc:
        raise NoFinder(str(exc)) from None
    return find_defects(plan, rgb)


def default_teach(examples: Sequence[Example]):
    """sam_engine.finder.fewshot.teach on the examples."""
    from sam_engine.finder import fewshot

    return fewshot.teach([fewshot.Example(rgb=e.rgb, mask=e.mask, cls=e.cls) for e in examples])


def find_job(find_fn: FindFn, rgb: np.ndarray, cls: str, recipe, path: Path):
    """Find `cls` on one image (the worker's job)."""

    def job(report, on_step) -> FindSummary:
        on_step(0, 0, f"finding {cls} on {path.name}…")
        result = find_fn(rgb, cls, recipe)
        report(path, result)
        return FindSummary(1, len(result.found), result.model_id)

    return job


def similar_job(teach_fn: TeachFn, examples: Sequence[tuple[Path, list[np.ndarray]]], cls: str,
                paths: Sequence[Path], load: Callable[[Path], np.ndarray] | None = None):
    """Learn `cls` from the masks accepted on each example image, then propose on every path
    (the worker's job). load(path) -> RGB uint8, load_for_display's by default."""
    load = load or (lambda p: load_for_display(p).rgb)

    def job(report, on_step) -> FindSummary:
        n = len(paths)
        count = sum(len(m) for _, m in examples)
        on_step(0, n, f"learning {cls} from {count} accepted example(s)…")
        taught = []
        for path, masks in examples:
            rgb = load(path)
            taught += [Example(rgb, m, cls) for m in masks if m.shape == rgb.shape[:2]]
        model = teach_fn(taught)
        model_id = examples_model_id(model, cls, len(taught))
        found, unreadable = 0, []
        for i, path in enumerate(paths):
            on_step(i, n, f"{cls}: image {i + 1} of {n}")
            try:
                rgb = load(path)
            except (SamEngineError, OSError):
                unreadable.append(path.name)
                continue
            hits = tuple(model.find(rgb, wanted=[cls]))
            found += len(hits)
            report(path, FindResult(hits, tuple(rgb.shape[:2]), (cls,), model_id))
        on_step(n, n, "")
        return FindSummary(n, found, model_id, len(taught), tuple(unreadable))

    return job


def examples_model_id(model, cls: str, n: int) -> str:
    """The taught model's id; an unsaved fewshot model (manifest None) is named by its class
    and number of examples, e.g. "examples:pit×3"."""
    model_id = getattr(model, "model_id", None)
    saved = getattr(model, "manifest", True) is not None
    return model_id if model_id and saved else f"examples:{cls}×{n}"


class FindWorker(QObject):
    """Runs one job(report, on_step) -> FindSummary; report(path, FindResult) and
    on_step(done, total, text) raise JobCancelled once cancel() was called."""

    found = Signal(object, object)  # path, FindResult
    progress = Signal(int, int, str)
    finished = Signal(object)  # FindSummary
    failed = Signal(str, str)  # CANCELLED / NO_FINDER / ERROR, message

    def __init__(self, job) -> None:
        super().__init__()
        self.job = job
        self.cancelled = threading.Event()
        self.last_step = (0, 0)

    def cancel(self) -> None:
        self.cancelled.set()

    def report(self, path: Path, result: FindResult) -> None:
        if self.cancelled.is_set():
            raise JobCancelled
        self.found.emit(path, result)

    def on_step(self, done: int, total: int, text: str = "") -> None:
        if self.cancelled.is_set():
            raise JobCancelled
        self.last_step = (done, total)
        self.progress.emit(done, total, text)

    @Slot()
    def run(self) -> None:
        try:
            summary = self.job(self.report, self.on_step)
        except JobCancelled:
            done, total = self.last_step
            self.failed.emit(CANCELLED, f"stopped after {done} of {total} images" if total
                             else "stopped")
        except NoFinder as exc:
            self.failed.emit(NO_FINDER, str(exc))
        except Exception as exc:  # shown to the inspector; the window keeps working
            self.failed.emit(ERROR, describe_error(exc, "finding defects"))
        else:
            self.finished.emit(summary)


class FindRunner(JobRunner):
    """A find job's runner: relays each image's proposals and the progress."""

    found = Signal(object, object)
    progress = Signal(int, int, str)
    what = "a find"

    def make_worker(self, job) -> FindWorker:
        return FindWorker(job)

    def relay(self, worker: FindWorker) -> None:
        worker.found.connect(self.found)
        worker.progress.connect(self.progress)


class FindController(QObject):
    """The window's Find actions, the review queue and its dock.

    The window gives: annotator, autosave, panel, paths, folder, current, messages,
    statusBar(), go_to(path) and, once built, the actions act_find, act_find_similar,
    act_queue_accept, act_queue_reject and act_queue_skip, which this keeps enabled as they
    apply. find_fn and teach_fn may be replaced at any time (tests: fakes)."""

    def __init__(self, window, find_fn: FindFn | None = None,
                 teach_fn: TeachFn | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.find_fn = find_fn or default_find
        self.teach_fn = teach_fn or default_teach
        self.review = ReviewQueue(window)
        self.dock = QDockWidget("Review queue", window)
        self.dock.setObjectName("find_dock")
        self.dock.setWidget(self.review.dock)
        self.runner = FindRunner(self)
        self.job: tuple[str, str] | None = None  # (kind "find" / "similar", class) running
        self.job_queued = 0
        self.counts: dict[Path, Counter] = {}  # accepted defects per class, per folder image
        self.counted: tuple[Path | None, tuple[Path, ...]] | None = None
        self.closing = False
        self.shown = ""  # the message bar text this controller showed last
        self.runner.found.connect(self._on_found)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.review.dock.cancelRequested.connect(self.cancel)
        self.review.on_change = self.refresh_actions
        window.annotator.defectsUpdated.connect(self._on_defects)

    # ------------------------------------------------------------------ state
    @property
    def current_class(self) -> str:
        return self.window.annotator.current_class

    def _count_folder(self) -> None:
        """Accepted defects per class on each folder image (stored inspections only), once per
        folder; a new folder also drops the old one's queue."""
        w = self.window
        key = (w.folder, tuple(w.paths))
        if self.counted == key:
            return
        previous, self.counted, self.counts = self.counted, key, {}
        if previous is not None and previous[0] != w.folder:
            self.runner.cancel()
            self.review.queue.clear()
        try:
            inspected = [p for p, s in w.autosave.statuses(list(w.paths)).items()
                         if s != "not started"]
            for path in inspected:
                inspection = w.autosave.load(path)
                if inspection is not None:
                    self.counts[path] = Counter(f.defect_class for f in inspection.findings)
        except StoreError as exc:
            w.messages.show_message(str(exc))

    def examples_count(self, cls: str) -> int:
        """Accepted defects of `cls` on the folder's images (and the image shown)."""
        self._count_folder()
        counts = dict(self.counts)
        an = self.window.annotator
        if an.path is not None:
            counts[an.path] = Counter(f.defect_class for f in an.findings)
        return sum(c[cls] for c in counts.values())

    def _on_defects(self) -> None:
        an = self.window.annotator
        self._count_folder()
        if an.path is not None and an.path in self.window.paths:
            self.counts[an.path] = Counter(f.defect_class for f in an.findings)
        self.refresh_actions()

    def refresh_actions(self) -> None:
        """Texts, tooltips and enabled state of the Find and review actions."""
        w = self.window
        if not hasattr(w, "act_find"):
            return  # the window is still building its actions
        cls, idle = self.current_class, not self.runner.running
        w.act_find.setText(f"&Find {cls}")
        set_tip(w.act_find, f"find {cls} defects on this image with the trained finder; "
                            "A / R accept or reject each proposal")
        w.act_find.setEnabled(idle and w.annotator.image is not None)
        n = self.examples_count(cls)
        w.act_find_similar.setText(f"Find &similar {cls} in folder")
        if n:
            why = (f"learn {cls} from the {n} accepted {cls} defect(s) and propose more like "
                   f"them on every image of the folder")
        else:
            why = (f"disabled: accept one {cls} defect first (mark it with a click or a box, "
                   "Enter); Find similar learns from accepted examples")
        set_tip(w.act_find_similar, why)
        w.act_find_similar.setEnabled(idle and n > 0 and bool(w.paths))
        has = self.review.current is not None
        for act in (w.act_queue_accept, w.act_queue_reject, w.act_queue_skip):
            act.setEnabled(has)

    # ------------------------------------------------------------------ actions
    def find_current(self) -> bool:
        """F: the finder on the current image; its proposals join the queue."""
        w, an = self.window, self.window.annotator
        if self.runner.running:
            w.statusBar().showMessage("a find is running: wait for it or Cancel it", 5000)
            return False
        if an.image is None or an.path is None:
            w.messages.show_message("open an image first (File > Open folder, Ctrl+O)",
                                    kind="warning")
            return False
        cls = self.current_class
        self._start("find", cls, find_job(self.find_fn, an.image.rgb, cls, w.autosave.recipe,
                                          an.path), f"finding {cls} on {an.path.name}…")
        return True

    def collect_examples(self, cls: str) -> list[tuple[Path, list[np.ndarray]]]:
        """(image, masks) of every accepted `cls` defect on the folder's images."""
        w, an = self.window, self.window.annotator
        self._count_folder()
        out = []
        for path in w.paths:
            if path == an.path:
                findings = an.findings
            elif self.counts.get(path, Counter())[cls]:
                try:
                    inspection = w.autosave.load(path)
                except StoreError:
                    continue
                findings = [] if inspection is None else inspection.findings
            else:
                continue
            masks = [f.mask for f in findings if f.defect_class == cls and f.mask is not None]
            if masks:
                out.append((path, masks))
        return out

    def find_similar(self) -> bool:
        """Ctrl+Shift+F: learn the current class from its accepted defects, propose across the
        folder (starting at the image shown)."""
        w = self.window
        if self.runner.running:
            w.statusBar().showMessage("a find is running: wait for it or Cancel it", 5000)
            return False
        cls = self.current_class
        examples = self.collect_examples(cls)
        if not examples:
            w.messages.show_message(f"accept one {cls} defect first: Find similar learns from "
                                    "accepted examples", kind="warning")
            return False
        paths = list(w.paths)
        if w.current in paths:
            i = paths.index(w.current)
            paths = paths[i:] + paths[:i]
        n = sum(len(m) for _, m in examples)
        self._start("similar", cls, similar_job(self.teach_fn, examples, cls, paths),
                    f"learning {cls} from {n} accepted example(s)…", len(paths))
        return True

    def cancel(self) -> None:
        if self.runner.running:
            self.runner.cancel()
            self.review.dock.cancel.setEnabled(False)
            self.review.dock.bar.setFormat("cancelling after this image…")

    def _say(self, text: str, kind: str, actions=()) -> None:
        self.shown = text
        self.window.messages.show_message(text, kind=kind, scope="image", actions=actions)

    def _start(self, kind: str, cls: str, job, text: str, total: int = 0) -> None:
        if self.shown and self.window.messages.text() == self.shown:
            self.window.messages.hide()  # the last find's message is stale now
        self.job, self.job_queued = (kind, cls), 0
        self.dock.show()
        self.dock.raise_()
        self.review.dock.set_progress(0, total, text)
        self.window.statusBar().showMessage(text)
        self.runner.start(job)
        self.refresh_actions()

    # ------------------------------------------------------------------ results
    def _on_found(self, path: Path, result: FindResult) -> None:
        if self.job is None or path not in self.window.paths:
            return  # a cancelled job's last result, or one of a folder no longer open
        self.job_queued += len(self.review.add(path, result, wanted=self.job[1]))

    def _on_progress(self, done: int, total: int, text: str) -> None:
        if text:
            self.review.dock.set_progress(done, total, text)

    def _end_job(self) -> tuple[str, str]:
        job, self.job = self.job or ("find", self.current_class), None
        self.review.dock.set_progress(0, 0, "")
        self.window.statusBar().clearMessage()
        self.refresh_actions()
        return job

    def _on_finished(self, summary: FindSummary) -> None:
        if self.closing:
            return
        (kind, cls), w = self._end_job(), self.window
        queued, left = self.job_queued, len(self.review.queue.pending())
        where = (w.current.name if kind == "find" and w.current is not None
                 else f"{summary.images} images")
        if queued:
            text = f"{queued} {cls} proposal(s) on {where} to review ({summary.model_id})"
        elif summary.found:
            text = (f"no new {cls} proposal on {where}: the {summary.found} found are accepted "
                    "or queued already")
        else:
            text = f"no {cls} found on {where} ({summary.model_id})"
        if summary.unreadable:
            text += f"; {len(summary.unreadable)} unreadable image(s) skipped"
        if kind == "similar":
            text += f"; learned from {summary.examples} accepted example(s)"
        w.statusBar().showMessage(text, 15_000)
        if not left:  # with proposals to review the dock counts them; else say why none
            self.review.dock.summary.setText(text)
            self._say(text, "info")

    def _on_failed(self, kind: str, message: str) -> None:
        if self.closing:
            return
        (_, cls), w = self._end_job(), self.window
        if kind == CANCELLED:
            text = f"find stopped: {message}; the proposals found so far stay in the queue"
            w.statusBar().showMessage(text, 10_000)
            self.review.dock.summary.setText(text)
            return
        if kind == NO_FINDER:
            similar = w.act_find_similar.isEnabled()
            hint = (" Find similar (Ctrl+Shift+F) proposes defects like the accepted ones instead."
                    if similar else f" Accept one {cls} defect (a click or a box, Enter); Find "
                    "similar (Ctrl+Shift+F) then proposes more like it.")
            actions = (("Find similar", self.find_similar),) if similar else ()
            self._say(message + ("" if message.endswith(".") else ".") + hint, "warning",
                      actions)
            self.review.dock.summary.setText(message)
            return
        w.messages.show_message(message, kind="error")

    def shutdown(self, wait_ms: int | None = None) -> bool:
        self.closing = True
        return self.runner.shutdown(wait_ms)


def set_tip(action, text: str) -> None:
    """An action's tooltip (with its keys) and status tip."""
    keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText)
                     for s in action.shortcuts())
    action.setToolTip(f"{text} ({keys})" if keys else text)
    action.setStatusTip(text)

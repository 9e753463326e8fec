"""The review queue of found defects (Inspect > Find): one key per decision.

Each proposal is a Found on one image of the folder, pending until the inspector accepts it (A or
Enter: it becomes a defect exactly as an accepted click mask does: measured, stored at once,
undoable), rejects it (R, Backspace, or Delete when no defect is selected) or skips it (N,
Space). The current proposal is drawn on the canvas (outline, box, class and score); the next one
is shown at once, switching image when it lies on another. Every accept and reject is written to
the audit trail ("find_accept" / "find_reject": class, score, model, source, image, box).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen, QUndoCommand
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.autosave import image_key
from app.gui.canvas import MaskItem
from app.gui.mask_geometry import MaskShape, mask_shape
from app.inspection.findings import Finding
from app.store import StoreError
from sam_engine.finder.types import UNKNOWN_CLASS, FindResult

PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
SAME_DEFECT_IOU = 0.5  # a proposal overlapping an accepted or queued one more than this is dropped
PROPOSAL_COLOUR = QColor(150, 255, 40)  # lime: apart from the live magenta and the defect palette
MARKS = {PENDING: "•", ACCEPTED: "✓", REJECTED: "✗"}
KEYS_HINT = "A accept · R reject · N skip"


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def box_of(mask: np.ndarray) -> Box | None:
    """The box of a bool mask's pixels; None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def cropped(mask: np.ndarray) -> tuple[Box, np.ndarray] | None:
    """(box, the mask inside it) of a full-size bool mask; None when it is empty."""
    box = box_of(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return box, np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=bool)


def crop_iou(a: tuple[Box, np.ndarray], b: tuple[Box, np.ndarray]) -> float:
    """Intersection over union of two cropped masks (box, crop) of one image."""
    (ax0, ay0, ax1, ay1), ca = a
    (bx0, by0, bx1, by1), cb = b
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    inter = 0 if x0 >= x1 or y0 >= y1 else int(np.count_nonzero(
        ca[y0 - ay0:y1 - ay0, x0 - ax0:x1 - ax0] & cb[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]))
    union = int(np.count_nonzero(ca)) + int(np.count_nonzero(cb)) - inter
    return inter / union if union else 0.0


@dataclass(eq=False)
class Proposal:
    """One found defect waiting for the inspector's decision. Its mask is kept cropped to its
    box (a queue of full-size masks of large images would not fit in memory)."""

    path: Path
    cls: str
    score: float
    source: str
    model_id: str
    box: Box
    crop: np.ndarray = field(repr=False)  # bool, the mask inside box
    image_size: tuple[int, int]  # H, W
    state: str = PENDING
    finding: Finding | None = None  # the defect it became, once accepted

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    def mask(self) -> np.ndarray:
        """The full-size bool mask."""
        out = np.zeros(self.image_size, bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.crop
        return out

    def shape(self) -> MaskShape | None:
        """What the canvas draws (mask_shape of the crop, moved to the box)."""
        s = mask_shape(self.crop)
        if s is None:
            return None
        x0, y0 = self.box[:2]
        return replace(s, x0=s.x0 + x0, y0=s.y0 + y0,
                       outlines=tuple(o + (x0, y0) for o in s.outlines))


class ProposalQueue(QObject):
    """The proposals in the order they were found, and which one is current (no widgets)."""

    changed = Signal()
    currentChanged = Signal(object)  # Proposal or None

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: list[Proposal] = []
        self.current: Proposal | None = None

    def add(self, path: Path, result: FindResult, accepted: Sequence[Finding] = (),
            wanted: str | None = None) -> list[Proposal]:
        """Queue a FindResult's defects on `path` (of class `wanted` or unknown only, when
        given), best score first, except those overlapping an accepted finding or a queued
        proposal of the same class, or of any class for an unknown one (IoU > SAME_DEFECT_IOU);
        returns the proposals queued."""
        path = Path(path)
        size = tuple(int(v) for v in result.image_size)
        kept = [(f.defect_class, c) for f in accepted
                if f.mask is not None and f.mask.shape == size and (c := cropped(f.mask))]
        kept += [(p.cls, (p.box, p.crop)) for p in self.items if p.path == path]
        added = []
        for found in sorted(result.found, key=lambda f: -f.score):
            if wanted is not None and found.cls not in (wanted, UNKNOWN_CLASS):
                continue
            c = cropped(found.mask) if found.mask.shape == size else None
            if c is None or any(found.cls in (cls, UNKNOWN_CLASS)
                                and crop_iou(c, k) > SAME_DEFECT_IOU for cls, k in kept):
                continue
            p = Proposal(path, found.cls, float(found.score), found.source, result.model_id,
                         c[0], c[1], size)
            added.append(p)
            kept.append((found.cls, c))
        if added:
            self.items.extend(added)
            self.changed.emit()
        return added

    def pending(self) -> list[Proposal]:
        return [p for p in self.items if p.state == PENDING]

    def count(self, state: str) -> int:
        return sum(p.state == state for p in self.items)

    def next_pending(self, after: Proposal | None = None) -> Proposal | None:
        """The first pending proposal after `after` in queue order (wrapping), else None; never
        `after` itself."""
        if after is None or after not in self.items:
            return next(iter(self.pending()), None)
        i = self.items.index(after)
        order = self.items[i + 1:] + self.items[:i]
        return next((p for p in order if p.state == PENDING), None)

    def set_current(self, p: Proposal | None) -> None:
        if p is not self.current:
            self.current = p
            self.currentChanged.emit(p)

    def set_state(self, p: Proposal, state: str) -> None:
        p.state = state
        self.changed.emit()

    def clear(self) -> None:
        self.items = []
        self.set_current(None)
        self.changed.emit()


class TagItem(QGraphicsItem):
    """A label on a dark box at a fixed screen size (ignores the zoom), above its anchor."""

    def __init__(self, text: str, colour: QColor) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.text, self.colour = text, colour
        self.font = QFont()
        self.font.setPointSizeF(max(self.font.pointSizeF(), 9.0))
        self.font.setBold(True)
        fm = QFontMetrics(self.font)
        w, h = fm.horizontalAdvance(text) + 10, fm.height() + 6
        self.rect = QRectF(0, -h - 2, w, h)

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt override)
        return self.rect.adjusted(-2, -2, 2, 2)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.setPen(QPen(self.colour, 2))
        painter.setBrush(QBrush(QColor(20, 20, 20, 225)))
        painter.drawRoundedRect(self.rect, 3, 3)
        painter.setFont(self.font)
        painter.setPen(QPen(self.colour.lighter(120)))
        painter.drawText(self.rect, int(Qt.AlignmentFlag.AlignCenter), self.text)


class ProposalOverlay:
    """The current proposal on the canvas (mask, outline, box, tag) and the other pending ones
    of the same image as thin dashed boxes."""

    def __init__(self, canvas) -> None:
        self.canvas = canvas
        self.items: list[QGraphicsItem] = []
        self.shown: Proposal | None = None  # the proposal scrolled into view last

    def clear(self) -> None:
        scene = self.canvas.scene()
        for item in self.items:
            if item.scene() is scene:
                scene.removeItem(item)
        self.items = []

    def show(self, current: Proposal | None, others: Iterable[Proposal], tag: str = "") -> None:
        """Draw `current` (None: none) and `others`; a newly current proposal is scrolled into
        view (above the accepted defects, below the prompt markers)."""
        self.clear()
        faint = QColor(PROPOSAL_COLOUR)
        faint.setAlpha(150)
        for p in others:
            self._add(self._frame(p.box, faint, 1, 0), 3.5)
        if current is not None:
            shape = current.shape()
            if shape is not None:
                self._add(MaskItem(shape, PROPOSAL_COLOUR), 3.6)
            self._add(self._frame(current.box, PROPOSAL_COLOUR, 2, 1), 3.6)
            label = TagItem(tag, PROPOSAL_COLOUR)
            label.setPos(QPointF(current.box[0] - 1, current.box[1] - 1))
            self._add(label, 3.7)
            if current is not self.shown:
                x0, y0, x1, y1 = current.box
                self.canvas.ensureVisible(QRectF(x0, y0, x1 - x0, y1 - y0), 40, 40)
        self.shown = current
        self.canvas.viewport().update()

    @staticmethod
    def _frame(box: Box, colour: QColor, width: float, margin: int) -> QGraphicsRectItem:
        x0, y0, x1, y1 = box
        item = QGraphicsRectItem(QRectF(x0 - margin, y0 - margin, x1 - x0 + 2 * margin,
                                        y1 - y0 + 2 * margin))
        pen = QPen(colour, width, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        item.setPen(pen)
        return item

    def _add(self, item: QGraphicsItem, z: float) -> None:
        item.setZValue(z)
        self.canvas.scene().addItem(item)
        self.items.append(item)


class QueueDock(QWidget):
    """The queue as a list (current row selected), what the keys do, a progress bar with Cancel
    while a find runs, and Accept / Reject / Skip / Clear buttons."""

    chosen = Signal(object)  # Proposal clicked
    cancelRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.summary = QLabel("Inspect > Find (Ctrl+F) proposes defects of the current class; "
                              "Find similar (Ctrl+Shift+F) learns them from accepted ones.")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        row = QHBoxLayout()
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.cancelRequested)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel)
        self.progress_row = QWidget()
        self.progress_row.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        self.progress_row.hide()
        layout.addWidget(self.progress_row)
        self.list = QListWidget()
        self.list.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys stay the window's
        self.list.setAlternatingRowColors(True)
        self.list.itemClicked.connect(lambda item: self.chosen.emit(item.data(Qt.UserRole)))
        layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        self.accept = QPushButton("Accept (A)")
        self.reject = QPushButton("Reject (R)")
        self.skip = QPushButton("Skip (N)")
        self.clear = QPushButton("Clear")
        self.clear.setToolTip("drop every proposal not decided yet (decisions stay recorded)")
        for b in (self.accept, self.reject, self.skip, self.clear):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            buttons.addWidget(b)
        layout.addLayout(buttons)

    def show_queue(self, queue: ProposalQueue) -> None:
        self.list.clear()
        for i, p in enumerate(queue.items):
            item = QListWidgetItem(f"{MARKS[p.state]} {i + 1}. {p.cls} {p.score:.2f} · "
                                   f"{p.area} px · {p.path.name}")
            item.setData(Qt.UserRole, p)
            item.setToolTip(f"{p.path}\n{p.cls}, score {p.score:.3f}, {p.area} px, box "
                            f"{p.box}\nfound by {p.model_id} ({p.source}); {p.state}")
            if p.state != PENDING:
                item.setForeground(QBrush(QColor(120, 120, 120)))
            self.list.addItem(item)
            if p is queue.current:
                self.list.setCurrentItem(item)
                self.list.scrollToItem(item)
        left, total = len(queue.pending()), len(queue.items)
        if total:
            self.summary.setText(
                f"<b>{left}</b> of {total} to review · {queue.count(ACCEPTED)} accepted · "
                f"{queue.count(REJECTED)} rejected<br>{KEYS_HINT}")
        for b in (self.accept, self.reject, self.skip):
            b.setEnabled(queue.current is not None)
        self.clear.setEnabled(left > 0)

    def set_progress(self, done: int, total: int, text: str) -> None:
        """A running find: steps done of total (total 0: busy), or hidden when text is ""."""
        self.progress_row.setVisible(bool(text))
        self.bar.setRange(0, total)
        self.bar.setValue(done)
        self.bar.setFormat(text)
        self.cancel.setEnabled(True)


def record_event(store, action: str, actor: str, after: dict,
                 inspection_id: int | None = None, defect_id: int | None = None) -> None:
    """One row in the store's audit trail (StoreError when it cannot be written)."""
    store.record_event(action, actor=actor, inspection_id=inspection_id, defect_id=defect_id,
                       after=after)


class ProposalAccept(QUndoCommand):
    """A = the proposal's mask becomes a stored defect (undo: removed again, the proposal
    pending); as undo.AcceptCommand, but the prompts in progress stay as they are."""

    def __init__(self, annotator, finding: Finding, review: ReviewQueue,
                 proposal: Proposal) -> None:
        super().__init__(f"accept found {finding.defect_class}")
        self.a, self.finding, self.review, self.proposal = annotator, finding, review, proposal
        self._done = True  # the first redo runs inside push: the defect is stored already

    def redo(self) -> None:
        if not self._done:  # an undone accept comes back under the same number
            self.a.restore([self.finding])
        self._done = False
        self.proposal.finding = self.finding
        self.a.defects_changed()
        self.review.queue.set_state(self.proposal, ACCEPTED)

    def undo(self) -> None:
        self.a.store_call(self.a.autosave.remove, self.a.inspection, [self.finding])
        self.proposal.finding = None
        self.a.defects_changed()
        self.review.queue.set_state(self.proposal, PENDING)
        self.review.show(self.proposal)


class ProposalReject(QUndoCommand):
    """R = the proposal is dropped (undo: pending and current again)."""

    def __init__(self, review: ReviewQueue, proposal: Proposal) -> None:
        super().__init__(f"reject found {proposal.cls}")
        self.review, self.proposal = review, proposal
        self._done = True  # the first redo runs inside push: the rejection is recorded already

    def redo(self) -> None:
        if not self._done:
            self.review.record(self.proposal, "reject", self.review.inspection_id())
        self._done = False
        self.review.queue.set_state(self.proposal, REJECTED)

    def undo(self) -> None:
        self.review.record(self.proposal, "reject_undone", self.review.inspection_id())
        self.review.queue.set_state(self.proposal, PENDING)
        self.review.show(self.proposal)


class ReviewQueue(QObject):
    """The window's review of proposals: keys, canvas overlay, store writes and audit trail.

    The window gives: annotator, autosave, store, canvas, panel, current, go_to(path),
    messages, statusBar()."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.queue = ProposalQueue(self)
        self.dock = QueueDock()
        self.overlay = ProposalOverlay(window.canvas)
        self.on_change: Callable[[], None] | None = None  # the actions' enabled state
        self.queue.changed.connect(self._refresh)
        self.queue.currentChanged.connect(lambda _p: self._refresh())
        self.dock.chosen.connect(self.show)
        self.dock.accept.clicked.connect(self.accept)
        self.dock.reject.clicked.connect(self.reject)
        self.dock.skip.clicked.connect(self.skip)
        self.dock.clear.clicked.connect(self.clear)
        window.annotator.defectsUpdated.connect(self.sync_overlay)

    @property
    def current(self) -> Proposal | None:
        return self.queue.current

    def here(self) -> bool:
        """A pending proposal is current on the image shown (Enter / Delete act on it)."""
        p, an = self.queue.current, self.window.annotator
        return p is not None and p.state == PENDING and an.path == p.path

    # ------------------------------------------------------------------ queueing
    def add(self, path: Path, result: FindResult, wanted: str | None = None) -> list[Proposal]:
        """Queue a result on `path`, minus what is accepted there already; the first proposal
        queued becomes current when none is."""
        w = self.window
        if w.annotator.path == path:
            accepted = w.annotator.findings
        else:
            try:
                inspection = w.autosave.load(path)
            except StoreError:
                inspection = None
            accepted = [] if inspection is None else inspection.findings
        added = self.queue.add(path, result, accepted, wanted)
        if added and (self.current is None or self.current.state != PENDING):
            self.show(added[0])
        return added

    def clear(self) -> None:
        self.queue.items = [p for p in self.queue.items if p.state != PENDING]
        self.queue.set_current(None)
        self.queue.changed.emit()

    # ------------------------------------------------------------------ showing
    def show(self, p: Proposal | None) -> None:
        """Make p current: its image opens (when another is shown) and the panel's class is its
        class."""
        w = self.window
        self.queue.set_current(p)
        if p is not None:
            if w.current != p.path:
                w.go_to(p.path)
            names = list(w.autosave.class_names)
            if p.cls in names and w.panel.current_class() != p.cls:
                w.panel.choose_class(names.index(p.cls))
        self.sync_overlay()

    def tag(self, p: Proposal) -> str:
        return f"found {p.cls} {p.score:.2f}? {KEYS_HINT}"

    def sync_overlay(self) -> None:
        """Draw the current proposal when its image is the one shown, else nothing."""
        an, p = self.window.annotator, self.queue.current
        if an.image is None or an.path is None:
            self.overlay.clear()
            return
        others = [q for q in self.queue.items
                  if q.path == an.path and q.state == PENDING and q is not p]
        shown = p if p is not None and p.path == an.path and p.state == PENDING else None
        if shown is not None and shown.image_size != an.image.size:
            shown = None
        self.overlay.show(shown, others, "" if shown is None else self.tag(shown))

    def _refresh(self) -> None:
        self.dock.show_queue(self.queue)
        self.sync_overlay()
        if self.on_change is not None:
            self.on_change()

    def _status(self, text: str) -> None:
        self.window.statusBar().showMessage(text, 8000)

    # ------------------------------------------------------------------ decisions
    def _ready(self) -> Proposal | None:
        """The current pending proposal when its image is open, else None (and says why)."""
        p, an = self.queue.current, self.window.annotator
        if p is None or p.state != PENDING:
            return None
        if an.path != p.path or an.image is None:
            self._status(f"{p.path.name} is still opening: press the key again once it shows")
            return None
        return p

    def inspection_id(self) -> int | None:
        inspection = self.window.annotator.inspection
        return None if inspection is None else inspection.id

    def record(self, p: Proposal, decision: str, inspection_id: int | None = None,
               defect_id: int | None = None) -> bool:
        """The decision in the audit trail (a failure goes to the message bar)."""
        w = self.window
        after = {"decision": decision, "defect_class": p.cls, "score": round(p.score, 4),
                 "model_id": p.model_id, "source": p.source, "image": image_key(p.path),
                 "box": list(p.box), "area_px": p.area}
        return w.annotator.store_call(record_event, w.store, f"find_{decision}",
                                      w.autosave.actor, after, inspection_id, defect_id)

    def accept(self) -> bool:
        """A / Enter: the current proposal becomes a measured, stored, undoable defect."""
        p = self._ready()
        if p is None:
            return False
        w = self.window
        an, autosave = w.annotator, w.autosave
        if p.image_size != an.image.size:
            w.messages.show_message(
                f"the proposal's mask is {p.image_size[1]}x{p.image_size[0]} but "
                f"{p.path.name} is {an.image.size[1]}x{an.image.size[0]}: reject it (R)",
                scope="image")
            return False
        cls = p.cls
        if cls == UNKNOWN_CLASS or cls not in autosave.class_names:
            cls = an.current_class  # an anomaly of no known type: the class chosen in the panel
        finding = autosave.make_finding(p.mask(), cls, p.score, None)
        finding.source = p.source
        if an.inspection is None:
            an.inspection = autosave.new_inspection(an.path, an.image.digest)
        if not an.store_call(autosave.add, an.inspection, [finding]):
            return False
        an.undo.push(ProposalAccept(an, finding, self, p))
        self.record(p, "accept", an.inspection.id, finding.id)
        self._status(f"accepted {cls} #{finding.number} ({p.score:.2f})")
        self._advance(p)
        return True

    def reject(self) -> bool:
        """R / Backspace: the current proposal is dropped (recorded as rejected)."""
        p = self._ready()
        if p is None:
            return False
        if not self.record(p, "reject", self.inspection_id()):
            return False
        self.window.annotator.undo.push(ProposalReject(self, p))
        self._status(f"rejected {p.cls} ({p.score:.2f})")
        self._advance(p)
        return True

    def skip(self) -> None:
        """N / Space: the next pending proposal (this one stays pending)."""
        p = self.queue.current
        nxt = self.queue.next_pending(p)
        if nxt is None:
            self._status("no other proposal to review" if p is not None and p.state == PENDING
                         else "the review queue is empty")
            if p is not None and p.state == PENDING:
                self.show(p)
            return
        self.show(nxt)
        self._status(f"skipped: proposal {self.queue.items.index(p) + 1} stays pending"
                     if p is not None and p.state == PENDING else "")

    def _advance(self, done: Proposal) -> None:
        nxt = self.queue.next_pending(done)
        if nxt is None:
            self.queue.set_current(None)
            self.sync_overlay()
            self._status(f"review queue done: {self.queue.count(ACCEPTED)} accepted, "
                         f"{self.queue.count(REJECTED)} rejected")
            return
        self.show(nxt)

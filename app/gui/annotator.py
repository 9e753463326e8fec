"""The work on the current image: prompts, masks, candidates, accepted defects, undo.

Prompts may be given before the embedding is ready; they are decoded as soon as it is. Only
regions without a decoded result are sent to the decoder worker, one at a time, so undo/redo
between snapshots shows stored results at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QUndoStack

from app.gui.autosave import IN_PROGRESS, NOT_STARTED, Autosave
from app.gui.canvas import Canvas, DefectDraw
from app.gui.images import LoadedImage
from app.gui.mask_geometry import MaskShape, mask_shape
from app.gui.session import PromptSession, Region, RegionResult, Snapshot, add_box, add_point
from app.gui.undo import AcceptCommand, ClassCommand, DeleteCommand, PromptCommand
from app.gui.workers import DecodeRequest, DecodeResult, EngineHost, Prepared
from app.inspection.findings import Finding, Inspection, Verdict, defect_numbers, prompts_to_dict
from app.outputs.overlay import PALETTE
from app.store import StoreError

UNDO_LIMIT = 50
# a SAM mask whose predicted IoU is below this (or the class's min_score) is questioned; the
# classic engine's scores are no IoU estimate, so only a recipe's min_score applies to them
LOW_SCORE = 0.3
LARGE_FRACTION = 0.5  # a mask covering more than this share of the image is questioned

# ask(question) -> True to go on; the window shows a dialog, tests answer it
Confirm = Callable[[str], bool]


def colour_of(number: int) -> QColor:
    """A defect's colour follows its number, so it never changes when others are deleted."""
    return QColor(*(int(v) for v in PALETTE[(number - 1) % len(PALETTE)]))


def _fmt(v: float | None, unit: str, digits: int = 2) -> str | None:
    return None if v is None else f"{v:.{digits}f} {unit}"


def key_measurement(f: Finding, recipe) -> str:
    """The figure the class's tolerance is about (length, width or area), for the image label."""
    m = f.measurements
    if m is None:
        return ""
    rule = None if recipe is None else recipe.rule(f.defect_class)
    if rule is not None and (rule.max_area_mm2 is not None or rule.max_area_px is not None) \
            and rule.max_length_mm is None and rule.max_length_px is None:
        return _fmt(m.area_mm2, "mm²") or f"{m.area_px} px"
    if rule is not None and rule.max_width_mm is not None and rule.max_length_mm is None:
        return _fmt(m.thickness_mm, "mm") or f"{m.thickness_px:.0f} px wide"
    return _fmt(m.feret_max_mm, "mm") or f"{m.feret_max_px:.0f} px long"


def measurement_lines(f: Finding, number: int) -> list[str]:
    """The selected defect's figures, shown beside the verdict badge."""
    m = f.measurements
    lines = [f"#{number} {f.defect_class}"]
    if m is not None:
        area = f"area {m.area_px} px" + (f" = {m.area_mm2:.3f} mm²" if m.area_mm2 is not None
                                         else "")
        lines.append(area)
        lines.append(f"length {_fmt(m.feret_max_mm, 'mm', 3) or f'{m.feret_max_px:.1f} px'}")
        lines.append(f"width {_fmt(m.thickness_mm, 'mm', 3) or f'{m.thickness_px:.1f} px'}")
        if m.datum_distance_mm is not None:
            lines.append(f"to datum {m.datum_distance_mm:.2f} mm")
    if f.score is not None:
        lines.append(f"score {f.score:.3f}")
    return lines


@dataclass(frozen=True)
class MaskCheck:
    """What is doubtful about a mask about to be accepted (empty: nothing)."""

    warnings: tuple[str, ...]


def check_mask(area_px: int, image_px: int, score: float | None,
               low: float = LOW_SCORE) -> MaskCheck:
    """Warnings for a score below `low` or an implausible size (most of the image)."""
    out = []
    if score is not None and score < low:
        out.append(f"low score {score:.3f} (below {low:g}): the mask may not be the defect")
    fraction = area_px / image_px if image_px else 0.0
    if fraction > LARGE_FRACTION:
        out.append(f"the mask covers {fraction:.0%} of the image: a defect is rarely that large")
    return MaskCheck(tuple(out))


class Annotator(QObject):
    candidateInfo = Signal(str)
    defectsUpdated = Signal()
    statusChanged = Signal(object, str)  # path, status
    message = Signal(str)  # an error for the message bar
    latency = Signal(float, float)  # decode ms, prompt-to-painted ms
    saved = Signal(bool, str)  # a store write: ok, or not and why

    def __init__(self, canvas: Canvas, host: EngineHost, autosave: Autosave, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.host = host
        self.autosave = autosave
        self.undo = QUndoStack(self)
        self.undo.setUndoLimit(UNDO_LIMIT)
        self.path: Path | None = None
        self.image: LoadedImage | None = None
        self.prepared: Prepared | None = None
        self.inspection: Inspection | None = None
        self.snapshot: Snapshot = ()
        self.session = PromptSession()
        self.current_class = autosave.class_names[0]
        self.prompted = False  # any prompt given on this image (finishing asks when not)
        self._shapes: dict[tuple[int, int], MaskShape | None] = {}
        self._in_flight: int | None = None
        self._prompt_time: dict[int, float] = {}
        self._waiting_paint: tuple[int, float, float] | None = None  # generation, t0, decode ms
        self._defect_shapes: dict[int, MaskShape | None] = {}
        host.decoded.connect(self._on_decoded)
        host.decodeFailed.connect(self._on_decode_failed)
        canvas.overlayPainted.connect(self._on_painted)

    # ------------------------------------------------------------------ image
    def set_image(self, path: Path, image: LoadedImage, lut=None) -> None:
        """Show a newly opened image (its embedding may still be computing)."""
        self.path, self.image, self.prepared = path, image, None
        self.snapshot = ()
        self.prompted = False
        self.session = PromptSession()
        self._shapes.clear()
        self._defect_shapes.clear()
        self._in_flight = None
        self.undo.clear()
        self.canvas.set_image(image, lut)
        try:
            self.inspection = self.autosave.load(path)
        except StoreError as exc:
            self.inspection = None
            self.message.emit(str(exc))
        self.defects_changed()
        self.candidateInfo.emit("")

    def set_prepared(self, prepared: Prepared) -> None:
        if self.image is None or prepared.image.path != self.path:
            self.set_image(prepared.image.path, prepared.image)
        self.prepared = prepared
        self._request_missing()

    def clear_image(self) -> None:
        self.path = self.image = self.prepared = self.inspection = None
        self.snapshot = ()
        self.undo.clear()
        self.canvas.set_image(None)
        self.defects_changed()

    @property
    def findings(self) -> list[Finding]:
        return [] if self.inspection is None else self.inspection.findings

    @property
    def active(self) -> Region | None:
        return self.snapshot[-1] if self.snapshot else None

    def status(self) -> str:
        insp = self.inspection
        if insp is not None and insp.verdict is not None:
            return insp.verdict.status
        if insp is not None or self.snapshot:
            return IN_PROGRESS
        return NOT_STARTED

    # ------------------------------------------------------------------ prompts
    def add_point(self, x: float, y: float, label: int) -> None:
        if self.image is None:
            return
        after = add_point(self.snapshot, x, y, label)
        self.prompted = True
        self._prompt_time[after[-1].uid] = time.perf_counter()
        kind = "positive" if label else "negative"
        self.undo.push(PromptCommand(self, self.snapshot, after, f"{kind} point"))

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        if self.image is None:
            return
        after = add_box(self.snapshot, (x0, y0, x1, y1))
        self.prompted = True
        self._prompt_time[after[-1].uid] = time.perf_counter()
        self.undo.push(PromptCommand(self, self.snapshot, after, "box"))

    def clear_prompts(self) -> None:
        if self.snapshot:
            self.undo.push(PromptCommand(self, self.snapshot, (), "clear prompts"))

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Make a snapshot current (called by the undo commands)."""
        was_empty = not self.snapshot
        self.snapshot = snapshot
        points = [p for r in snapshot for p in r.points]
        boxes = [r.box for r in snapshot if r.box is not None]
        self.canvas.set_markers(points, boxes)
        self._refresh_live()
        self._request_missing()
        if was_empty != (not snapshot) and self.path is not None:
            self.statusChanged.emit(self.path, self.status())

    def _request_missing(self) -> None:
        if self.prepared is None or self._in_flight is not None:
            return
        region = next((r for r in reversed(self.snapshot)
                       if r.uid not in self.session.results), None)
        if region is None:
            return
        self._in_flight = region.uid
        self.host.decode(DecodeRequest(region.uid, self.prepared.handle,
                                       self.session.prompts(region)))

    def _on_decoded(self, result: DecodeResult) -> None:
        if result.key != self._in_flight:
            return  # for an image no longer shown
        self._in_flight = None
        self.session.results[result.key] = RegionResult(result.masks, result.decode_ms)
        best = result.masks.best_index(0)
        self._shapes[(result.key, best)] = result.shape
        if any(r.uid == result.key for r in self.snapshot):
            self._refresh_live()
            t0 = self._prompt_time.pop(result.key, None)
            if t0 is not None:
                self._waiting_paint = (self.canvas.overlay_generation, t0, result.decode_ms)
        self._request_missing()

    def _on_decode_failed(self, key: int, message: str) -> None:
        if key == self._in_flight:
            self._in_flight = None
            self.message.emit(message)

    def _on_painted(self, generation: int) -> None:
        if self._waiting_paint is not None and generation >= self._waiting_paint[0]:
            _, t0, decode_ms = self._waiting_paint
            self._waiting_paint = None
            self.latency.emit(decode_ms, (time.perf_counter() - t0) * 1e3)

    def _shape(self, region: Region) -> MaskShape | None:
        c = self.session.candidate(region)
        if c is None:
            # until its own mask is decoded, a refining click keeps showing the mask it refines
            # (no flicker, and no repaint beside the decoder)
            parent = region.parent if self.prepared is not None else None
            while parent is not None and self.session.candidate(parent) is None:
                parent = parent.parent
            return None if parent is None else self._shape(parent)
        key = (region.uid, c)
        if key not in self._shapes:
            self._shapes[key] = mask_shape(self.session.results[region.uid].masks.mask(0, c))
        return self._shapes[key]

    def _refresh_live(self) -> None:
        self.canvas.set_live([s for r in self.snapshot if (s := self._shape(r)) is not None])
        self._emit_candidate()

    def _emit_candidate(self) -> None:
        region = self.active
        if region is None:
            self.candidateInfo.emit("")
            return
        c = self.session.candidate(region)
        if c is None:
            wait = "computing the embedding…" if self.prepared is None else "segmenting…"
            self.candidateInfo.emit(wait)
            return
        n = self.session.n_candidates(region)
        what = "predicted IoU" if self.host.engine is None or \
            self.host.engine.info.name != "classic" else "score"
        shape = self._shape(region)
        area = 0 if shape is None else shape.area_px
        text = (f"candidate {c + 1}/{n} · {what} {self.session.score(region):.3f}"
                f" · {area} px")
        h, w = self.image.size if self.image is not None else (0, 0)
        check = check_mask(area, h * w, self.session.score(region), self._low_score())
        if check.warnings:
            text += " · ⚠ " + "; ".join(check.warnings)
        self.candidateInfo.emit(text)

    def _low_score(self) -> float:
        recipe = self.autosave.recipe
        rule = None if recipe is None else recipe.rule(self.current_class)
        floor = 0.0 if rule is None else float(rule.min_score)
        engine = self.host.engine
        iou = engine is not None and engine.info.name != "classic"
        return max(floor, LOW_SCORE) if iou else floor

    def cycle(self, step: int = 1) -> None:
        if self.active is not None and self.session.cycle(self.active, step) is not None:
            self._refresh_live()

    def choose(self, c: int) -> None:
        if self.active is not None and self.session.choose(self.active, c):
            self._refresh_live()

    # ------------------------------------------------------------------ defects
    def store_call(self, fn, *args) -> bool:
        """Run a store write; a failure goes to the message bar (nothing is half-written)."""
        try:
            fn(*args)
        except (StoreError, OSError) as exc:
            text = f"could not save to the inspection database: {exc}"
            self.message.emit(text)
            self.saved.emit(False, text)
            return False
        self.saved.emit(True, "")
        return True

    def accept(self, confirm: Confirm | None = None) -> bool:
        """Enter: every region's chosen mask becomes a defect of the current class. A mask with
        a low score or most of the image is accepted only when confirm(question) says so."""
        if self.image is None or not self.snapshot:
            return False
        if any(self.session.candidate(r) is None for r in self.snapshot):
            self.message.emit("the mask is still being computed: press Enter again when it shows")
            return False
        warnings = []
        for region in self.snapshot:
            mask = self.session.mask(region)
            if mask.any():
                warnings += check_mask(int(mask.sum()), mask.size, self.session.score(region),
                                       self._low_score()).warnings
        if warnings and confirm is not None and not confirm(
                "Accept this mask as a defect?\n\n" + "\n".join(f"• {w}" for w in warnings)):
            return False
        findings = []
        for region in self.snapshot:
            mask = self.session.mask(region)
            if not mask.any():
                continue
            prompts = prompts_to_dict(self.session.prompts(region))
            findings.append(self.autosave.make_finding(mask, self.current_class,
                                                       self.session.score(region), prompts))
        if not findings:
            self.message.emit("the mask is empty: add a point or a box on the defect")
            return False
        if self.inspection is None:
            self.inspection = self.autosave.new_inspection(self.path, self.image.digest)
        if not self.store_call(self.autosave.add, self.inspection, findings):
            return False
        self.undo.push(AcceptCommand(self, self.snapshot, findings))
        return True

    def restore(self, findings: list[Finding]) -> bool:
        """Bring removed findings back under their own numbers (undo of a delete, redo of an
        accept)."""
        return self.store_call(self.autosave.restore, self.inspection, findings)

    def delete(self, finding: Finding) -> None:
        if self.store_call(self.autosave.remove, self.inspection, [finding]):
            self.undo.push(DeleteCommand(self, finding))

    def set_class(self, finding: Finding, defect_class: str) -> None:
        old = finding.defect_class
        if old != defect_class and self.store_call(self.autosave.set_class, self.inspection,
                                                   finding, defect_class):
            self.undo.push(ClassCommand(self, finding, old, defect_class))

    def untouched(self) -> bool:
        """Nothing was prompted, marked or judged on this image."""
        return not self.prompted and not self.findings and (
            self.inspection is None or self.inspection.verdict is None)

    def finish(self, how: str = "") -> Verdict | None:
        """Judge the image and store its verdict; `how` goes with it into the record
        ("no defects confirmed" when the inspector confirmed an untouched image)."""
        if self.image is None:
            return None
        if self.inspection is None:
            self.inspection = self.autosave.new_inspection(self.path, self.image.digest)
        if not self.store_call(self.autosave.finish, self.inspection, how):
            return None
        self.defects_changed()
        return self.inspection.verdict

    def live_verdict(self) -> Verdict:
        return self.autosave.verdict(self.findings)

    def numbers(self) -> list[int]:
        """The defect numbers of self.findings (stable: the store gives them on add)."""
        return defect_numbers(self.findings)

    def finding_numbered(self, number: int | None) -> Finding | None:
        return next((f for f, n in zip(self.findings, self.numbers(), strict=True)
                     if n == number), None)

    def defects_changed(self) -> None:
        draws = []
        recipe = self.autosave.recipe
        for f, number in zip(self.findings, self.numbers(), strict=True):
            if id(f) not in self._defect_shapes:
                self._defect_shapes[id(f)] = None if f.mask is None else mask_shape(f.mask)
            shape = self._defect_shapes[id(f)]
            if shape is not None:
                figure = key_measurement(f, recipe)
                label = f"#{number} {f.defect_class}" + (f" · {figure}" if figure else "")
                draws.append(DefectDraw(shape, colour_of(number), number, label))
        self.canvas.set_defects(draws)
        self.defectsUpdated.emit()
        if self.path is not None:
            self.statusChanged.emit(self.path, self.status())

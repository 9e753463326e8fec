"""Every accepted defect goes to the inspection store at once (no Qt).

One Inspection per image and session: created with the first accepted defect (or when the image is
finished without defects), then each accepted defect is appended, each removed one marked
deleted, each verdict replaced, in its own transaction, so closing the window or a crash loses
nothing accepted. A write that fails raises StoreError (NotSavedError, "not saved: ...", when a
commit may not have reached the file) and leaves the Inspection as it was, so the window shows
only what is stored; the annotator puts the message in the message bar. The verdict is stored
when the inspector finishes the image; until then the image is "in progress". Measurements use
the recipe's calibration and datum; verdicts app.inspection.verdict.judge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.inspection.findings import FAIL, PASS, Finding, Inspection, Reason, Verdict
from app.inspection.measure import Calibration, measure
from app.inspection.recipe import Recipe, RecipeError
from app.inspection.verdict import judge
from app.store import InspectionStore
from sam_engine.results import EngineInfo

log = logging.getLogger(__name__)

NOT_STARTED = "not started"
IN_PROGRESS = "in progress"
ACTOR = "sam-inspect gui"


def image_key(path: str | Path) -> str:
    """How an image is named in the store: its absolute path."""
    return str(Path(path).resolve())


@dataclass(frozen=True)
class Station:
    """Who inspects where: stored with every inspection."""

    operator: str = ""
    station: str = ""
    lot: str = ""


class Autosave:
    """Reads and writes the GUI's inspections in an InspectionStore."""

    def __init__(self, store: InspectionStore, recipe: Recipe | None, station: Station,
                 engine: EngineInfo | None = None) -> None:
        self.store = store
        self.station = station
        self.engine = engine
        self.set_recipe(recipe)

    def set_recipe(self, recipe: Recipe | None) -> None:
        self.recipe = recipe
        self.calibration, self.calibration_note = self._calibration(recipe)

    @staticmethod
    def _calibration(recipe: Recipe | None) -> tuple[Calibration, str]:
        if recipe is None:
            return Calibration(), "no recipe loaded: sizes in pixels only"
        try:
            return recipe.calibrate(), ""
        except RecipeError as exc:
            return Calibration(), f"{exc}; sizes in pixels only"

    @property
    def actor(self) -> str:
        return self.station.operator or ACTOR

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.recipe.class_names if self.recipe is not None else ()
        return names or ("defect",)

    # ------------------------------------------------------------------ reading
    def load(self, image_path: str | Path) -> Inspection | None:
        return self.store.latest_inspection(image_key(image_path))

    def statuses(self, paths: list[Path]) -> dict[Path, str]:
        """not started / in progress / PASS / FAIL for each path."""
        keys = {image_key(p): p for p in paths}
        verdicts = self.store.latest_verdicts(list(keys))
        return {
            p: (verdicts[k] or IN_PROGRESS) if k in verdicts else NOT_STARTED
            for k, p in keys.items()
        }

    # ------------------------------------------------------------------ findings
    def new_inspection(self, image_path: str | Path, digest: str) -> Inspection:
        info = self.engine
        recipe = self.recipe
        return Inspection(
            image_path=image_key(image_path), image_sha256=digest,
            part_id=Path(image_path).stem, lot=self.station.lot, station=self.station.station,
            operator=self.station.operator, engine="" if info is None else info.name,
            model_id="" if info is None else info.model_id,
            checkpoint_sha256=None if info is None else info.checkpoint_sha256,
            recipe_name="" if recipe is None else recipe.name,
            recipe_version="" if recipe is None else recipe.version,
        )

    def make_finding(self, mask: np.ndarray, defect_class: str, score: float | None,
                     prompts: dict | None) -> Finding:
        """A measured finding of a bool mask (raises ValueError for an empty mask)."""
        datum = None if self.recipe is None else self.recipe.datum
        m = measure(mask, self.calibration, datum=datum)
        source = "sam" if self.engine is None else self.engine.name
        return Finding(defect_class=defect_class, mask=mask, measurements=m, score=score,
                       prompts=prompts, accepted_by=self.actor, source=source)

    def add(self, inspection: Inspection, findings: list[Finding]) -> None:
        """Store new findings of an inspection (the inspection itself on its first save)."""
        if inspection.id is None:
            inspection.findings.extend(findings)
            inspection.verdict = None
            try:
                self.store.add_inspection(inspection, actor=self.actor)
            except Exception:  # nothing was stored: the window must not show them as saved
                del inspection.findings[len(inspection.findings) - len(findings):]
                raise
        else:
            for f in findings:
                f.id = None
                self.store.add_defect(inspection.id, f, actor=self.actor)
                inspection.findings.append(f)
        self._rejudge(inspection)

    def remove(self, inspection: Inspection, findings: list[Finding]) -> None:
        """Mark findings deleted in the store and drop them from the inspection."""
        for f in findings:
            if f.id is not None and inspection.id is not None:
                self.store.delete_defect(f.id, actor=self.actor)
            inspection.findings[:] = [g for g in inspection.findings if g is not f]
        self._rejudge(inspection)

    def set_class(self, inspection: Inspection, finding: Finding, defect_class: str) -> None:
        """Store the new class first: if that fails (StoreError, e.g. NotSavedError "not
        saved: ..."), the finding keeps its old class, so the window never shows it."""
        if finding.id is not None:
            self.store.update_defect(finding.id, actor=self.actor, defect_class=defect_class)
        finding.defect_class = defect_class
        self._rejudge(inspection)

    # ------------------------------------------------------------------ verdicts
    def verdict(self, findings: list[Finding]) -> Verdict:
        """The recipe's verdict; without a recipe, any defect fails the part."""
        if self.recipe is not None:
            return judge(findings, self.recipe)
        if not findings:
            return Verdict(PASS)
        return Verdict(FAIL, (Reason(rule="no_recipe", defect_class=findings[0].defect_class,
                                     message=f"{len(findings)} defect(s) found; no recipe "
                                             "loaded to judge them against"),))

    def finish(self, inspection: Inspection, how: str = "") -> Verdict:
        """Judge the image and store the verdict (the image is then PASS or FAIL). `how` goes
        into the audit trail as {"finished": how}, e.g. "no defects confirmed" when the
        inspector confirmed an image nobody prompted on."""
        verdict = self.verdict(inspection.findings)
        audit = {"finished": how} if how else None
        previous = inspection.verdict
        try:
            if inspection.id is None:
                inspection.verdict = verdict
                self.store.add_inspection(inspection, actor=self.actor, audit=audit)
            else:
                self.store.set_verdict(inspection.id, verdict, actor=self.actor, audit=audit)
        except Exception:  # not stored ("not saved: ..."): the window keeps the old verdict
            inspection.verdict = previous
            raise
        inspection.verdict = verdict
        return verdict

    def restore(self, inspection: Inspection, findings: list[Finding]) -> None:
        """Bring back findings that remove() took away (GUI undo/redo) under their own numbers:
        a stored one is undeleted (same row), one never stored is added."""
        for f in findings:
            if f.id is not None and inspection.id is not None:
                self.store.undelete_defect(f.id, actor=self.actor)
                inspection.findings.append(f)
            else:
                self.add(inspection, [f])
        inspection.findings.sort(key=lambda g: (g.number is None, g.number or 0))
        self._rejudge(inspection)

    def _rejudge(self, inspection: Inspection) -> None:
        """A finished image keeps a verdict that matches its defects."""
        if inspection.verdict is not None and inspection.id is not None:
            self.finish(inspection)

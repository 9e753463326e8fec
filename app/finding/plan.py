"""Which models find which classes, and running them on one image.

For each class asked for, the trained finder is used when it knows the class, else a model
taught by accepted examples; a golden-sample model, when there is one for the part, adds
regions unlike the good parts as class "unknown" (the verdict FAILs a class the recipe does not
define: an unknown defect is never a silent PASS). Models come from the names given, else from
what the tuned-model registry promotes for the recipe's part name (sections "finders",
"examples", "golden").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.finding.classes import FindError, choose_classes, how_to_teach
from sam_engine.finder.types import FindResult, Found


@dataclass(frozen=True)
class FindSpec:
    """What to find and with which models, by name (picklable: batch workers load the plan)."""

    wanted: tuple[str, ...] | None = None
    finder: str | None = None
    examples: str | None = None
    golden: str | None = None

    def plan(self, recipe=None) -> FindPlan:
        return plan_find(self.wanted, recipe, finder=self.finder, examples=self.examples,
                         golden=self.golden)


@dataclass
class FindPlan:
    """The models to run and the classes each looks for."""

    wanted: tuple[str, ...]
    finder: object | None = None  # Finder (PyTorch) or OnnxFinder: .find(rgb, wanted)
    examples: object | None = None  # fewshot.ExampleModel: .find(rgb, wanted)
    golden: object | None = None  # anomaly.GoldenModel: .find(rgb)
    by_finder: tuple[str, ...] = ()
    by_examples: tuple[str, ...] = ()
    not_looked_for: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        ids = [getattr(m, "model_id", "?") for m in (self.finder, self.examples, self.golden)
               if m is not None]
        return "+".join(ids)

    def describe(self) -> str:
        parts = []
        if self.by_finder:
            parts.append(f"{', '.join(self.by_finder)} by finder {self.finder.model_id}")
        if self.by_examples:
            parts.append(f"{', '.join(self.by_examples)} by examples "
                         f"{self.examples.model_id}")
        if self.golden is not None:
            parts.append(f"unknown defects by golden samples {self.golden.model_id}")
        if self.not_looked_for:
            parts.append(f"not looked for: {', '.join(self.not_looked_for)}")
        return "; ".join(parts)


def _promoted(recipe_name: str | None, section: str, root: Path | None) -> str | None:
    from sam_engine.learned.registry import promoted_for

    if not recipe_name:
        return None
    p = promoted_for(recipe_name, root, section=section)
    return p.model_id if p is not None else None


def load_any_finder(spec: str, root: Path | None = None):
    """A finder from a registry name (NAME[@V]), a model folder, or an ONNX finder export."""
    from sam_engine.learned.registry import resolve
    from sam_engine.onnx.finder_runtime import OnnxFinder, is_finder_export

    path = Path(spec).expanduser()
    if path.is_dir() and is_finder_export(path):
        return OnnxFinder(path)
    from sam_engine.finder.finder import load_finder

    return load_finder(resolve(spec, root))


def plan_find(wanted: Sequence[str] | None = None, recipe=None, *, finder: str | None = None,
              examples: str | None = None, golden: str | None = None,
              examples_model=None, use_golden: bool = True,
              root: Path | None = None) -> FindPlan:
    """The models for `wanted` (default: the recipe's classes, else all known classes).

    finder / examples / golden: a registry name or folder; None takes what the registry
    promotes for the recipe's part name. examples_model: an ExampleModel already in memory
    (the GUI's). Classes asked for by name that no model knows raise FindError saying how to
    teach them; recipe classes nobody knows are left out and named in `not_looked_for`.
    """
    from sam_engine.errors import CheckpointError

    recipe_name = getattr(recipe, "name", None)
    recipe_classes = tuple(recipe.class_names) if recipe is not None else None
    try:
        f_spec = finder or _promoted(recipe_name, "finders", root)
        fnd = load_any_finder(f_spec, root) if f_spec else None
        e_spec = examples or _promoted(recipe_name, "examples", root)
        ex = examples_model
        if ex is None and e_spec:
            from sam_engine.finder.fewshot import load_examples
            from sam_engine.learned.registry import resolve

            ex = load_examples(resolve(e_spec, root))
        g_spec = golden or (_promoted(recipe_name, "golden", root) if use_golden else None)
        gold = None
        if g_spec:
            from sam_engine.finder.anomaly import load_golden
            from sam_engine.learned.registry import resolve

            gold = load_golden(resolve(g_spec, root))
    except CheckpointError as exc:
        raise FindError(str(exc)) from None
    known_f = tuple(fnd.classes) if fnd is not None else ()
    known_e = tuple(ex.classes) if ex is not None else ()
    known = tuple(dict.fromkeys(known_f + known_e))
    if not known and gold is None:
        cls = (list(wanted or ()) or list(recipe_classes or ()) or ["CLASS"])[0]
        raise FindError("no finder, taught examples or golden samples are available"
                        + (f" for recipe {recipe_name}" if recipe_name else "")
                        + "; " + how_to_teach(cls))
    what = " and ".join(w for w, m in (("the finder", fnd), ("the taught examples", ex))
                        if m is not None) or "nothing"
    if known or wanted:  # classes asked for by name must be known, golden samples or not
        chosen, rest = choose_classes(known, wanted, recipe_classes, what)
    else:  # golden samples alone: the recipe's classes are not looked for, unknowns are
        chosen, rest = (), tuple(recipe_classes or ())
    by_f = tuple(c for c in chosen if c in known_f)
    by_e = tuple(c for c in chosen if c not in known_f)
    return FindPlan(chosen, fnd if by_f else None, ex if by_e else None, gold, by_f, by_e,
                    rest)


def find_defects(plan: FindPlan, rgb: np.ndarray) -> FindResult:
    """Run the plan's models on one image; defects of all of them, highest score first."""
    found: list[Found] = []
    timings: dict[str, float] = {}
    if plan.finder is not None and plan.by_finder:
        r = plan.finder.find(rgb, plan.by_finder)
        found.extend(r.found)
        timings.update({f"finder_{k}": v for k, v in r.timings_ms.items()})
    if plan.examples is not None and plan.by_examples:
        t0 = time.perf_counter()
        found.extend(plan.examples.find(rgb, plan.by_examples))
        timings["examples"] = round((time.perf_counter() - t0) * 1e3, 2)
    if plan.golden is not None:
        t0 = time.perf_counter()
        found.extend(plan.golden.find(rgb))
        timings["golden"] = round((time.perf_counter() - t0) * 1e3, 2)
    found.sort(key=lambda f: -f.score)
    return FindResult(tuple(found), (int(rgb.shape[0]), int(rgb.shape[1])), plan.wanted,
                      plan.model_id, timings)


def to_findings(result: FindResult, recipe=None, mm_per_px: float | None = None,
                calibration=None) -> list:
    """Measured Findings (source: "finder", "examples" or "anomaly") of a FindResult."""
    from app.inspection.fiducial import image_calibration
    from app.inspection.findings import Finding
    from app.inspection.measure import measure

    cal = calibration or image_calibration(recipe, mm_per_px, None)
    datum = recipe.datum if recipe is not None else None
    return [Finding(f.cls, f.mask, measure(f.mask, cal, datum=datum), float(f.score),
                    {"found_by": result.model_id, "box": list(f.box)}, source=f.source)
            for f in result.found]

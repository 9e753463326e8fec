"""The steps of inspecting one image, shared by the local and the Ray backend.

load (CPU: decode, read prompts, engine.prepare when the engine has it) -> encode (the engine's
image encoder) -> segment (decoder: fiducial, prompts, automatic masks) -> finish (CPU:
full-resolution masks, measure, judge, build the Inspection record). Each step raises on a bad
image or prompt file; the backends turn that into a logged, skipped image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from app.batch.discovery import ImageFile
from app.batch.prompt_sources import PromptSource
from app.inspection.fiducial import image_calibration, locate_fiducial, needs_fiducial
from app.inspection.findings import Finding, Inspection, prompts_to_dict
from app.inspection.measure import CalibrationError, measure
from app.inspection.recipe import PromptSpec, Recipe
from app.inspection.verdict import judge
from sam_engine.auto_masks import AutoMaskGenerator, AutoMaskSettings
from sam_engine.errors import PromptError, SamEngineError
from sam_engine.image_io import image_digest, load_image
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle

log = logging.getLogger(__name__)


class InspectError(SamEngineError):
    """One image cannot be inspected (e.g. its fiducial is not found)."""


@dataclass(frozen=True)
class Job:
    """What every worker needs besides its engine; picklable for Ray."""

    source: PromptSource
    recipe: Recipe | None = None
    mm_per_px: float | None = None
    auto: AutoMaskSettings | None = None
    auto_class: str = "defect"
    find: Any = None  # app.finding.plan.FindSpec: find defects without prompts
    lot: str = ""
    station: str = ""
    operator: str = "batch"


@dataclass(frozen=True)
class Task:
    """One image to inspect and its ledger key."""

    image: ImageFile
    key: str


@dataclass
class Loaded:
    task: Task
    rgb: np.ndarray = field(repr=False)
    specs: list[PromptSpec]
    prompt_file: str | None
    prepared: Any = field(default=None, repr=False)  # engine.prepare(rgb) where available
    seconds: dict = field(default_factory=dict)


@dataclass
class Segment:
    """One mask; `mask` may be a callable that computes it (engines upsample lazily), so the
    full-resolution upsampling runs on a finisher thread, not on the encoder's."""

    defect_class: str
    mask: Any = field(repr=False)
    score: float
    prompts: dict | None
    source: str | None = None  # what made it, when not the engine ("finder", "examples", ...)

    def materialise(self) -> np.ndarray:
        if callable(self.mask):
            self.mask = self.mask()
        return self.mask


@dataclass
class Segmented:
    loaded: Loaded
    segments: list[Segment]
    fiducial_mask: np.ndarray | None = field(default=None, repr=False)


@dataclass
class ImageRecord:
    """The result of one image: what the outputs, the store and the ledger are written from."""

    rel: str
    key: str
    out_stem: str
    size: tuple[int, int]
    inspection: Inspection
    prompt_file: str | None = None
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rel": self.rel, "key": self.key, "out_stem": self.out_stem,
                "size": list(self.size), "prompt_file": self.prompt_file,
                "seconds": self.seconds, "inspection": self.inspection.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> ImageRecord:
        return cls(d["rel"], d["key"], d["out_stem"], tuple(d["size"]),
                   Inspection.from_dict(d["inspection"]), d.get("prompt_file"),
                   d.get("seconds", {}))


def _check_calibration(cal, rgb: np.ndarray, task: Task, job: Job) -> None:
    """Refuse an implausible scale (measure.Calibration.check_image) before anything is
    measured or judged: also an image without findings must not pass with it. The message
    names where the scale came from (--mm-per-px, the recipe file, or the recipe's fiducial)."""
    try:
        cal.check_image(rgb.shape[:2])
    except CalibrationError as exc:
        if job.mm_per_px is not None:
            origin = "--mm-per-px"
        elif job.recipe.fiducial_diameter_mm is not None:
            origin = f"the fiducial of {job.recipe.path}"
        else:
            origin = f"{job.recipe.path} [calibration] mm_per_px"
        raise InspectError(f"{task.image.path}: {exc} (scale from {origin})") from None


def load(task: Task, job: Job, prepare=None) -> Loaded:
    """Decode the image and read its prompts (CPU only, thread-safe)."""
    t0 = time.perf_counter()
    rgb = load_image(task.image.path)
    if job.mm_per_px is not None or (job.recipe is not None
                                     and job.recipe.fiducial_diameter_mm is None):
        _check_calibration(image_calibration(job.recipe, job.mm_per_px, None), rgb, task, job)
    specs = job.source.load(task.image)
    ref = job.source.locate(task.image)
    prepared = prepare(rgb) if prepare is not None else None
    return Loaded(task, rgb, specs, ref.path, prepared,
                  {"load": time.perf_counter() - t0})


def encode(engine, loaded: Loaded) -> ImageHandle:
    """The image's handle: engine.set_prepared when the engine has it, else set_image."""
    set_prepared = getattr(engine, "set_prepared", None)
    if loaded.prepared is not None and set_prepared is not None:
        return set_prepared(loaded.prepared)
    return engine.set_image(loaded.rgb)


def _given(spec: PromptSpec) -> str:
    if spec.box is not None:
        return "box [" + ", ".join(f"{v:g}" for v in spec.box) + "]"
    return "points " + ", ".join(f"[{x:g}, {y:g}]" for x, y in spec.points)


def image_prompts(spec: PromptSpec, index: int, size: tuple[int, int],
                  fiducial_xy: tuple[float, float] | None, where: str | None,
                  image: object) -> Prompts:
    """Prompt `index` of an image (size H, W) in pixels. A point or box outside the image is an
    InspectError naming the prompt file (`where`) and the prompt as given, never moved onto the
    border: a detector's off-image prompt means the file does not belong to this image.
    Relative-frame boxes (YOLO) are clipped to the image, as rounding may put an edge a hair
    outside, but one lying entirely outside is an error too."""
    h, w = size
    frame = "" if spec.frame == "pixels" else f" in the {spec.frame} frame"

    def fail(reason: str) -> InspectError:
        src = f"{where}: " if where else ""
        return InspectError(f"{src}prompt {index + 1} ({spec.defect_class}, {_given(spec)}"
                            f"{frame}) for {image}: {reason}; fix the prompt file")

    relative = spec.frame == "relative"
    p = spec.to_prompts(size, fiducial_xy) if relative else spec.to_prompts(None, fiducial_xy)
    if spec.box is not None:
        x0, y0, x1, y1 = (np.asarray(spec.box, dtype=np.float64) * [w, h, w, h] if relative
                          else p.boxes[0])
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            raise fail(f"the box lies entirely outside the {w}x{h} image")
    if relative:
        return p  # clipped to the image
    try:  # p is not clipped
        validate_prompts(p, size)
    except PromptError as exc:
        raise fail(str(exc)) from None
    return p


def segment(engine, handle: ImageHandle, loaded: Loaded, job: Job,
            generator: AutoMaskGenerator | None = None, plan=None) -> Segmented:
    """Masks for the image's prompts (box-only prompts decoded as one batch), with auto
    settings the automatic masks, and with a find plan (app.finding) the defects it finds.
    Empty masks are dropped."""
    t0 = time.perf_counter()
    size = handle.original_size
    recipe = job.recipe
    fid_mask = fid_xy = None
    if needs_fiducial(recipe, (s.frame for s in loaded.specs), job.mm_per_px):
        try:
            fid_mask, fid_xy = locate_fiducial(engine, handle, recipe)
        except SamEngineError as exc:
            raise InspectError(f"{loaded.task.image.path}: {exc}") from None
    where = loaded.prompt_file or (recipe.path if recipe is not None and loaded.specs else None)
    try:
        prompts = [image_prompts(s, i, size, fid_xy, where, loaded.task.image.path)
                   for i, s in enumerate(loaded.specs)]
    except InspectError:
        raise
    except ValueError as exc:
        raise InspectError(f"{loaded.task.image.path}: {exc}") from None
    found: dict[int, Segment] = {}
    box_only = [i for i, p in enumerate(prompts) if p.n_boxes and not p.n_points]
    if box_only:
        boxes = np.concatenate([prompts[i].boxes for i in box_only])
        res = engine.predict(handle, Prompts.from_boxes(boxes), multimask_output=False)
        for b, i in enumerate(box_only):
            found[i] = Segment(loaded.specs[i].defect_class, partial(res.best, b),
                               float(res.scores[b].max()), prompts_to_dict(prompts[i]))
    for i, p in enumerate(prompts):
        if i in found:
            continue
        res = engine.predict(handle, p, multimask_output=p.n_boxes == 0)
        found[i] = Segment(loaded.specs[i].defect_class, partial(res.best, 0),
                           float(res.scores[0].max()),
                           prompts_to_dict(p))
    segments = [found[i] for i in range(len(prompts))]
    if generator is not None:
        for m in generator.generate(handle):
            segments.append(Segment(job.auto_class, m.mask, m.score,
                                    {"points": [list(m.point)], "labels": [1], "boxes": None}))
    if plan is not None:
        from app.finding.plan import find_defects

        result = find_defects(plan, loaded.rgb)
        for f in result.found:
            segments.append(Segment(f.cls, f.mask, float(f.score),
                                    {"found_by": result.model_id, "box": list(f.box)}, f.source))
    loaded.seconds["segment"] = time.perf_counter() - t0
    return Segmented(loaded, segments, fid_mask)


def finish(seg: Segmented, job: Job, info: EngineInfo) -> ImageRecord:
    """Measure every mask, judge against the recipe, and build the record (CPU only)."""
    t0 = time.perf_counter()
    loaded = seg.loaded
    kept = [s for s in seg.segments if s.materialise().any()]
    if len(kept) < len(seg.segments):
        log.info("%s: %d prompt(s) gave an empty mask", loaded.task.image.path,
                 len(seg.segments) - len(kept))
    cal = image_calibration(job.recipe, job.mm_per_px, seg.fiducial_mask)
    _check_calibration(cal, loaded.rgb, loaded.task, job)  # the fiducial's scale, too
    datum = job.recipe.datum if job.recipe is not None else None
    findings = [Finding(s.defect_class, s.mask, measure(s.mask, cal, datum=datum), s.score,
                        s.prompts, source=s.source or info.name) for s in kept]
    recipe = job.recipe
    image = loaded.task.image
    inspection = Inspection(
        image_path=str(image.path), image_sha256=image_digest(loaded.rgb),
        part_id=image.path.stem, lot=job.lot, station=job.station, operator=job.operator,
        engine=info.name, model_id=info.model_id, checkpoint_sha256=info.checkpoint_sha256,
        recipe_name=recipe.name if recipe else "", recipe_version=recipe.version if recipe else "",
        findings=findings, verdict=judge(findings, recipe) if recipe is not None else None)
    loaded.seconds["finish"] = time.perf_counter() - t0
    return ImageRecord(image.rel, loaded.task.key, image.out_stem,
                       (int(loaded.rgb.shape[0]), int(loaded.rgb.shape[1])), inspection,
                       loaded.prompt_file, dict(loaded.seconds))


def inspect(engine, task: Task, job: Job, generator: AutoMaskGenerator | None = None,
            plan=None) -> ImageRecord:
    """All steps in sequence (the Ray workers' path; the local backend pipelines them)."""
    loaded = load(task, job, getattr(engine, "prepare", None))
    t0 = time.perf_counter()
    handle = encode(engine, loaded)
    loaded.seconds["encode"] = time.perf_counter() - t0
    return finish(segment(engine, handle, loaded, job, generator, plan), job, engine.info)

"""run_batch: discover images, skip those already done, inspect the rest, write the reports.

Before anything heavy (loading the engine) the output folder is checked writable and locked
for the run (out_folder: a second run on it stops with a clear message); temporaries left by a
killed run are removed.

Order of writes per image (so a kill at any moment loses nothing reported done): mask PNG,
overlay and record JSON (each atomic), then the ledger's "storing" line, then the inspection
store transaction (its audit row holds the image's ledger key, so a rerun after a kill finds
exactly this inspection, whatever the settings), then the ledger's "done" line (fsynced), then
the progress bar counts it. The reports (coco.json, findings.csv, findings.jsonl, summary.json)
are rebuilt from the records at the end of every run, including an interrupted one. A file
that cannot be written (a full disk) fails its image, or is counted in the summary, and the run
ends with the summary. Named fault points (app.batch.faults) let tests kill the run between
any two of these steps.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.batch import faults
from app.batch.config import BatchConfig, file_digest, image_key, settings_digest
from app.batch.discovery import ImageFile, find_images
from app.batch.inspect_image import ImageRecord, InspectError, Job, Loaded, Task
from app.batch.ledger import LEDGER_NAME, Ledger
from app.batch.local_backend import PipelineStats, run_local
from app.batch.out_folder import OutputFolderError, OutputLock, remove_stale_temporaries
from app.batch.outputs import read_record, write_image_outputs, write_reports
from app.batch.prompt_sources import (
    AutoPrompts,
    FilePrompts,
    FindPrompts,
    PromptSource,
    RecipePrompts,
)
from app.batch.summary import RunCounts, build_summary, format_table
from app.inspection.recipe import Recipe, check_pinned, engine_for_recipe, load_recipe
from app.outputs import atomic_write
from sam_engine.errors import SamEngineError
from sam_engine.image_io import load_image

log = logging.getLogger(__name__)


class BatchError(SamEngineError):
    """The batch job cannot start (bad options, missing input); the message says what to do."""


@dataclass
class BatchResult:
    summary: dict
    records: list[ImageRecord]  # every image reported (this run and earlier ones), input order

    @property
    def exit_code(self) -> int:
        """0 when every image was inspected and every report written, 1 when any failed."""
        return 1 if self.summary["images_failed"] or self.summary["reports_failed"] else 0


def _source(config: BatchConfig, recipe: Recipe | None) -> PromptSource:
    modes = [m for m, on in (("--prompts", config.prompts is not None), ("--auto", config.auto),
                             ("--find", config.find is not None)) if on]
    if len(modes) > 1:
        raise BatchError(f"give one of --prompts DIR, --auto or --find, not {' and '.join(modes)}")
    if config.find is not None:
        plan = find_spec(config).plan(recipe)  # a class nobody can find fails here, at once
        if not config.quiet:
            print(f"finding: {plan.describe()}")
        return FindPrompts(plan.wanted, plan.model_id)
    if config.auto:
        if recipe is not None and recipe.rule(config.auto_class) is None:
            raise BatchError(
                f"automatic masks are reported as class {config.auto_class!r}, which recipe "
                f"{recipe.path} does not define; pass --auto-class with one of: "
                f"{', '.join(recipe.class_names)}")
        return AutoPrompts()
    if config.prompts is not None:
        return FilePrompts.open(config.prompts)
    if recipe is None or not recipe.prompts:
        raise BatchError("no prompts: give --recipe FILE with [[prompts]], --prompts DIR (per-"
                         "image prompt files: our JSON, COCO or YOLO txt) or --auto")
    return RecipePrompts(recipe)


def find_spec(config: BatchConfig):
    from app.finding.plan import FindSpec

    return FindSpec(tuple(config.find) or None, config.finder, config.examples, config.golden)


def engine_identity(engine) -> dict:
    """What identifies an engine's results (not the device it runs on)."""
    info = engine.info
    return {"name": info.name, "model": info.model_id, "checkpoint": info.checkpoint_sha256,
            "weights": getattr(engine, "weights_id", None), "dtype": info.dtype}


def _default_factory(config: BatchConfig, engine) -> Callable[[], object]:
    """A picklable factory that builds, on a Ray worker, the engine the driver resolved."""
    from sam_engine.factory import load_engine

    info = engine.info
    if info.name == "learned":  # the very folder and weights the driver loaded
        return functools.partial(load_engine, "learned", model=info.checkpoint,
                                 device=config.device, checkpoint_sha256=info.checkpoint_sha256)
    if info.name == "sam":
        return functools.partial(load_engine, "sam", model=info.model_id,
                                 checkpoint=info.checkpoint, device=config.device,
                                 precision=config.precision,
                                 checkpoint_sha256=config.checkpoint_sha256,
                                 allow_unverified=config.allow_unverified)
    return functools.partial(load_engine, info.name)


STORE_KEY = "batch_key"  # the ledger key, in the audit row of a batch-stored inspection


def _stored_before(store, image_path: str, key: str) -> bool:
    """Whether the store holds this image's inspection under this ledger key (image, settings
    and prompts digest): stored by an earlier or interrupted run. The store, not the ledger,
    is the source of truth, so a lost or damaged ledger never stores an image twice."""
    return store.stored_with(image_path, STORE_KEY, key) is not None


def run_batch(config: BatchConfig, engine=None,
              engine_factory: Callable[[], object] | None = None) -> BatchResult:
    """Run a batch job (module doc). `engine` (local backend) or `engine_factory` (Ray) replace
    the engine that config.engine/model/checkpoint would load."""
    try:
        faults.arm_from_env()
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    out = Path(config.out)
    recipe = load_recipe(config.recipe) if config.recipe is not None else None
    recipe_text = Path(config.recipe).read_text(encoding="utf-8") if recipe else None
    source = _source(config, recipe)
    if engine is None and engine_factory is None:
        engine_for_recipe(recipe, config.engine, config.model)  # a conflict fails before any work
    try:
        images = find_images(Path(config.input), exclude=out,
                             patterns=tuple(config.exclude))
    except FileNotFoundError as exc:
        raise BatchError(str(exc)) from None
    lock = OutputLock(out)
    try:
        lock.acquire()  # before the engine loads: a bad --out fails in a second, not after it
    except OutputFolderError as exc:
        raise BatchError(str(exc)) from None
    try:
        remove_stale_temporaries(out, lock.since)
        faults.reach("after_lock")
        return _run_locked(config, engine, engine_factory, out, recipe, recipe_text, source,
                           images)
    finally:
        lock.release()


def _run_locked(config: BatchConfig, engine, engine_factory, out: Path, recipe: Recipe | None,
                recipe_text: str | None, source: PromptSource, images: list[ImageFile]
                ) -> BatchResult:
    if config.ray is not None:
        if engine_factory is None:
            engine = engine or _load_engine(config, recipe)
            engine_factory = _default_factory(config, engine)
        elif engine is None:
            engine = engine_factory()  # the driver's copy identifies the results
    elif engine is None:
        engine = engine_factory() if engine_factory is not None else _load_engine(config, recipe)
    check_pinned(recipe, engine.info.model_id, engine.info.checkpoint_sha256)
    settings = settings_digest(config, engine_identity(engine), recipe_text, source.describe())
    job = Job(source, recipe, config.mm_per_px, config.auto_settings if config.auto else None,
              config.auto_class, find_spec(config) if config.find is not None else None,
              config.lot, config.station, config.operator)
    counts = RunCounts(found=len(images))
    ledger = Ledger(out / LEDGER_NAME)
    store = None
    if not config.no_store:
        from app.store import InspectionStore
        from app.store.store import default_db_path

        store = InspectionStore(config.db or default_db_path(out))
    if not config.quiet:
        print(f"engine: {engine.info.describe()}")
        print(f"{len(images)} images under {config.input}; results in {out.resolve()}")
    if isinstance(source, FilePrompts):
        counts.prompts_without_image = source.unmatched(images)
        if counts.prompts_without_image:
            names = counts.prompts_without_image
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            log.warning("%s names %d image(s) that are not among the inputs under %s: %s%s",
                        source.coco_path, len(names), config.input, ", ".join(names[:5]), more)
    interrupted = False
    stats = PipelineStats()
    keys: dict[str, str] = {}
    try:
        todo, keys = _plan(images, source, settings, ledger, store, config, counts, out)
        stats = _run(config, engine, engine_factory, todo, job, ledger, store, counts, out)
    except KeyboardInterrupt:
        interrupted = True  # what finished is on disk; report it, then stop
    finally:
        ledger.close()
        if store is not None:
            store.close()
    records = []
    for image in images:
        rec = read_record(out, image.out_stem) if image.rel in keys else None
        if rec is not None and rec.key == keys[image.rel] and ledger.is_done(rec.key, rec.rel):
            records.append(rec)
    try:
        write_reports(out, records, recipe.class_names if recipe else (),
                      polygons=config.coco_polygons)
    except OSError as exc:
        _report_failed(counts, out / "coco.json, findings.csv, findings.jsonl", exc)
    if config.report:
        _write_inspection_reports(out, records, config, recipe, counts)
    faults.reach("after_reports")
    backend = "local" if config.ray is None else f"ray ({config.ray})"
    summary = build_summary(records, counts, stats, engine.info.describe(), backend,
                            f"{recipe.name} {recipe.version}" if recipe else None)
    try:
        atomic_write.write_text(out / "summary.json", json.dumps(summary, indent=2))
    except OSError as exc:
        summary["reports_failed"] += 1
        summary["failed_reports"].append(
            {"path": str(out / "summary.json"), "error": _write_error(exc)})
    print(format_table(summary))
    if interrupted:
        raise KeyboardInterrupt
    return BatchResult(summary, records)


def _ledger_write(mark: Callable[[str, str], None], record: ImageRecord) -> None:
    try:
        mark(record.key, record.rel)
    except OSError as exc:
        raise InspectError(f"ledger {LEDGER_NAME}: {_write_error(exc)}") from None


def _write_error(exc: OSError) -> str:
    """Why a file could not be written, in words (a full disk says what to do)."""
    if exc.errno == errno.ENOSPC:
        return ("not written: the disk is full; free space and rerun (finished images are "
                "kept)")
    return f"not written: {exc.strerror or exc}"


def _report_failed(counts: RunCounts, path: Path | str, exc: BaseException) -> None:
    msg = _write_error(exc) if isinstance(exc, OSError) else f"not written: {exc}"
    log.error("%s: %s", path, msg)
    counts.reports_failed.append({"path": str(path), "error": msg})


def _write_inspection_reports(out: Path, records: list[ImageRecord], config: BatchConfig,
                              recipe: Recipe | None, counts: RunCounts) -> None:
    """One report per image in OUT/reports, redone only when its record is newer. A report that
    cannot be written is counted in the summary (and the exit code) with its path and reason;
    the inspection results stay valid and the other reports are still written."""
    from app.batch.outputs import record_path
    from app.report import write_report

    for rec in records:
        dest = out / "reports" / f"{rec.out_stem}.{config.report}"
        src = record_path(out, rec.out_stem)
        if dest.exists() and src.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
            continue
        try:
            write_report(rec.inspection, dest, recipe=recipe, image_root=str(config.input))
        except Exception as exc:  # a report is a view; never lose the batch over it
            _report_failed(counts, dest, exc)


def _load_engine(config: BatchConfig, recipe: Recipe | None = None):
    """The engine config names; the recipe's pinned model when it pins one (its sha256 is the
    expected one), and with engine "auto" the model promoted for the recipe's part name."""
    from sam_engine.factory import load_engine

    name, model = engine_for_recipe(recipe, config.engine, config.model)
    expected, allow = config.checkpoint_sha256, config.allow_unverified
    if recipe is not None and recipe.model is not None:  # check_pinned refuses a mismatch
        expected, allow = recipe.model.sha256, True
    return load_engine(name, model=model, checkpoint=config.checkpoint,
                       device=config.device, precision=config.precision,
                       checkpoint_sha256=expected, allow_unverified=allow,
                       recipe=recipe.name if recipe is not None else None)


def _plan(images: list[ImageFile], source: PromptSource, settings: str, ledger: Ledger,
          store, config: BatchConfig, counts: RunCounts, out: Path
          ) -> tuple[list[Task], dict[str, str]]:
    """Key every image (file digest + settings + prompt digest) and keep those not yet done:
    done in the ledger, its record on disk, and (with a store) its inspection in the store."""

    def key_of(image: ImageFile):
        try:
            ref = source.locate(image)
            return image, image_key(file_digest(image.path), settings, ref.digest), ref, None
        except (OSError, SamEngineError) as exc:
            return image, None, None, exc

    todo: list[Task] = []
    keys: dict[str, str] = {}
    with ThreadPoolExecutor(max(1, config.loaders)) as pool:
        for image, key, ref, exc in pool.map(key_of, images):
            if exc is not None:
                _fail(counts, image.path, exc)
                continue
            keys[image.rel] = key
            if isinstance(source, FilePrompts) and ref.path is None:
                counts.no_prompt_file += 1
            if not config.force and ledger.is_done(key, image.rel):
                rec = read_record(out, image.out_stem)
                if rec is not None and rec.key == key:
                    if store is None or _stored_before(store, rec.inspection.image_path, key):
                        counts.skipped += 1
                        continue
                    log.warning("%s: done in %s but its inspection is not in the store (%s); "
                                "inspecting it again", image.path, LEDGER_NAME, store.name)
            todo.append(Task(image, key))
    if counts.skipped and not config.quiet:
        print(f"{counts.skipped} images already done (ledger); --force redoes them")
    return todo, keys


def _fail(counts: RunCounts, path: Path, exc: BaseException) -> None:
    msg = str(exc) or type(exc).__name__
    if str(path) not in msg:
        msg = f"{path}: {msg}"
    log.error("skipped: %s", msg)
    counts.failed.append({"path": str(path), "error": msg})


def _run(config: BatchConfig, engine, engine_factory, todo: list[Task], job: Job,
         ledger: Ledger, store, counts: RunCounts, out: Path) -> PipelineStats:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="img", disable=config.quiet or not todo,
               dynamic_ncols=True, smoothing=0.1)
    lock = threading.Lock()

    def on_record(record: ImageRecord, loaded: Loaded | None) -> None:
        rgb = None
        if config.overlays:
            rgb = loaded.rgb if loaded is not None else load_image(record.inspection.image_path)
        try:
            write_image_outputs(out, record, rgb)
        except OSError as exc:
            raise InspectError(f"results in {out}: {_write_error(exc)}") from None
        faults.reach("after_outputs")
        if store is not None:
            _ledger_write(ledger.mark_storing, record)
            faults.reach("after_storing")
            store.add_inspection(record.inspection, actor="sam-inspect batch",
                                 audit={STORE_KEY: record.key}, once_per=STORE_KEY)
            faults.reach("after_store_commit")
        _ledger_write(ledger.mark_done, record)
        faults.reach("after_done")
        with lock:
            counts.inspected += 1
            bar.update(1)

    def on_failure(task: Task, exc: BaseException) -> None:
        with lock:
            _fail(counts, task.image.path, exc)
            bar.update(1)
            bar.set_postfix(failed=len(counts.failed))

    try:
        if config.ray is not None:
            from app.batch.ray_backend import run_ray

            return run_ray(engine_factory, todo, job, on_record, on_failure, address=config.ray,
                           actors=config.ray_actors, gpus_per_actor=config.ray_gpus_per_actor,
                           quiet=config.quiet)
        on_gpu = str(engine.info.device).startswith("cuda")
        batch_size = config.batch_size or (4 if on_gpu else 1)
        # next to a GPU the CPU work (measuring, writing) is the bottleneck: spread it
        finishers = config.finishers or (min(8, max(2, (os.cpu_count() or 2) // 2))
                                         if on_gpu else 1)
        queue_size = max(config.queue_size, batch_size, finishers)
        return run_local(engine, todo, job, on_record, on_failure, loaders=config.loaders,
                         queue_size=queue_size, batch_size=batch_size, finishers=finishers)
    finally:
        bar.close()

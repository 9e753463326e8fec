"""run_batch: discover images, skip those already done, inspect the rest, write the reports.

Order of writes per image (so a kill at any moment loses nothing reported done): mask PNG,
overlay and record JSON (each atomic), then the inspection store transaction, then the ledger's
"done" line (fsynced), then the progress bar counts it. The reports (coco.json, findings.csv,
findings.jsonl, summary.json) are rebuilt from the records at the end of every run, including
an interrupted one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app import atomic_write
from app.batch.config import BatchConfig, file_digest, image_key, settings_digest
from app.batch.discovery import ImageFile, find_images
from app.batch.inspect_image import ImageRecord, Job, Loaded, Task
from app.batch.ledger import LEDGER_NAME, Ledger
from app.batch.local_backend import PipelineStats, run_local
from app.batch.outputs import read_record, write_image_outputs, write_reports
from app.batch.prompt_sources import AutoPrompts, FilePrompts, PromptSource, RecipePrompts
from app.batch.summary import RunCounts, build_summary, format_table
from app.recipe import Recipe, load_recipe
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
        """0 when every image was inspected, 1 when any failed."""
        return 1 if self.summary["images_failed"] else 0


def _source(config: BatchConfig, recipe: Recipe | None) -> PromptSource:
    modes = [m for m, on in (("--prompts", config.prompts is not None), ("--auto", config.auto))
             if on]
    if len(modes) > 1:
        raise BatchError("give either --prompts DIR or --auto, not both")
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


def engine_identity(engine) -> dict:
    """What identifies an engine's results (not the device it runs on)."""
    info = engine.info
    return {"name": info.name, "model": info.model_id, "checkpoint": info.checkpoint_sha256,
            "weights": getattr(engine, "weights_id", None), "dtype": info.dtype}


def _default_factory(config: BatchConfig, engine) -> Callable[[], object]:
    """A picklable factory that builds, on a Ray worker, the engine the driver resolved."""
    from sam_engine.factory import load_engine

    info = engine.info
    if info.name == "sam":
        return functools.partial(load_engine, "sam", model=info.model_id,
                                 checkpoint=info.checkpoint, device=config.device,
                                 precision=config.precision)
    return functools.partial(load_engine, info.name)


def _stored_before(store, record: ImageRecord) -> bool:
    """Whether an interrupted run already stored this image's inspection."""
    from sqlalchemy import select

    from app.store.models import InspectionRow

    ins = record.inspection
    q = select(InspectionRow.id).where(
        InspectionRow.image_path == ins.image_path, InspectionRow.image_sha256 == ins.image_sha256,
        InspectionRow.model_id == ins.model_id, InspectionRow.recipe_name == ins.recipe_name,
        InspectionRow.recipe_version == ins.recipe_version).limit(1)
    with store.engine.connect() as conn:
        return conn.execute(q).first() is not None


def run_batch(config: BatchConfig, engine=None,
              engine_factory: Callable[[], object] | None = None) -> BatchResult:
    """Run a batch job (module doc). `engine` (local backend) or `engine_factory` (Ray) replace
    the engine that config.engine/model/checkpoint would load."""
    out = Path(config.out)
    recipe = load_recipe(config.recipe) if config.recipe is not None else None
    recipe_text = Path(config.recipe).read_text(encoding="utf-8") if recipe else None
    source = _source(config, recipe)
    try:
        images = find_images(Path(config.input), exclude=out,
                             patterns=tuple(config.exclude))
    except FileNotFoundError as exc:
        raise BatchError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    if config.ray is not None:
        if engine_factory is None:
            engine = engine or _load_engine(config)
            engine_factory = _default_factory(config, engine)
        elif engine is None:
            engine = engine_factory()  # the driver's copy identifies the results
    elif engine is None:
        engine = engine_factory() if engine_factory is not None else _load_engine(config)
    settings = settings_digest(config, engine_identity(engine), recipe_text, source.describe())
    job = Job(source, recipe, config.mm_per_px, config.auto_settings if config.auto else None,
              config.auto_class, config.lot, config.station, config.operator)
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
    interrupted = False
    stats = PipelineStats()
    keys: dict[str, str] = {}
    try:
        todo, keys = _plan(images, source, settings, ledger, config, counts, out)
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
    write_reports(out, records, recipe.class_names if recipe else ())
    if config.report:
        _write_inspection_reports(out, records, config, recipe)
    backend = "local" if config.ray is None else f"ray ({config.ray})"
    summary = build_summary(records, counts, stats, engine.info.describe(), backend,
                            f"{recipe.name} {recipe.version}" if recipe else None)
    atomic_write.write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(format_table(summary))
    if interrupted:
        raise KeyboardInterrupt
    return BatchResult(summary, records)


def _write_inspection_reports(out: Path, records: list[ImageRecord], config: BatchConfig,
                              recipe: Recipe | None) -> None:
    """One report per image in OUT/reports, redone only when its record is newer. A report that
    cannot be written is logged with its path; the inspection results stay valid."""
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
            log.error("%s: report not written: %s", dest, exc)


def _load_engine(config: BatchConfig):
    from sam_engine.factory import load_engine

    return load_engine(config.engine, model=config.model, checkpoint=config.checkpoint,
                       device=config.device, precision=config.precision)


def _plan(images: list[ImageFile], source: PromptSource, settings: str, ledger: Ledger,
          config: BatchConfig, counts: RunCounts, out: Path
          ) -> tuple[list[Task], dict[str, str]]:
    """Key every image (file digest + settings + prompt digest) and keep those not yet done."""

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
                    counts.skipped += 1
                    continue
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
        write_image_outputs(out, record, rgb)
        if store is not None:
            if not (record.key in ledger.storing and _stored_before(store, record)):
                ledger.mark_storing(record.key, record.rel)
                store.add_inspection(record.inspection, actor="sam-inspect batch")
        ledger.mark_done(record.key, record.rel)
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

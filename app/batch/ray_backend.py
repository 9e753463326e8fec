"""The Ray backend: the same job on a Ray cluster with Ray Data and an actor pool.

Each actor builds one engine (one model in memory per actor; a GPU each when the cluster has
GPUs) and runs every step of an image (inspect_image.inspect); the driver receives the records
and writes outputs, store and ledger exactly as the local backend does, so both give the same
results and the same resumable output folder. Workers read the images by path: on a cluster the
input folder must be on a file system every node mounts at the same path.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.batch.discovery import ImageFile
from app.batch.inspect_image import ImageRecord, Job, Task, inspect
from app.batch.local_backend import OnFailure, PipelineStats
from sam_engine.auto_masks import AutoMaskGenerator
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)


class RayTaskError(SamEngineError):
    """An image failed on a Ray worker; the message is the worker's error."""


class _InspectActor:
    """One engine per actor; inspects one row (image) per call."""

    def __init__(self, engine_factory: Callable[[], object], job: Job) -> None:
        self.engine = engine_factory()
        self.job = job
        self.generator = AutoMaskGenerator(self.engine, job.auto) if job.auto else None
        self.plan = job.find.plan(job.recipe) if job.find is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "record": [], "error": []}
        for i, path, rel, stem, key in zip(batch["index"], batch["path"], batch["rel"],
                                           batch["out_stem"], batch["key"], strict=True):
            task = Task(ImageFile(Path(str(path)), str(rel), str(stem)), str(key))
            out["index"].append(int(i))
            try:
                rec = inspect(self.engine, task, self.job, self.generator, self.plan)
                out["record"].append(json.dumps(rec.to_dict()))
                out["error"].append("")
            except Exception as exc:  # reported to the driver, which logs and skips the image
                log.debug("%s", traceback.format_exc())
                out["record"].append("")
                out["error"].append(str(exc) or type(exc).__name__)
        return out


def run_ray(engine_factory: Callable[[], object], tasks: list[Task], job: Job,
            on_record: Callable[[ImageRecord, None], None], on_failure: OnFailure, *,
            address: str = "local", actors: int | None = None,
            gpus_per_actor: float | None = None, quiet: bool = False) -> PipelineStats:
    """Inspect tasks on Ray; `engine_factory` must be picklable (e.g. functools.partial of
    sam_engine.factory.load_engine). Joins the running Ray session if there is one, else
    ray.init(address) ("local": start or join a local instance)."""
    import time

    import ray

    stats = PipelineStats()
    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=not quiet)
    if not tasks:
        return stats
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources().get("CPU", 1)
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if actors is None:
        actors = int(gpus // gpus_per_actor) if gpus_per_actor else max(1, int(cpus) // 2)
    actors = max(1, min(actors, len(tasks)))
    items = [{"index": i, "path": str(t.image.path), "rel": t.image.rel,
              "out_stem": t.image.out_stem, "key": t.key} for i, t in enumerate(tasks)]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * actors))
    ds = ds.map_batches(
        _InspectActor,
        fn_constructor_kwargs={"engine_factory": engine_factory, "job": job},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus_per_actor or None,
        num_cpus=1,
    )
    for row in ds.iter_rows():
        task = tasks[int(row["index"])]
        if row["error"]:
            on_failure(task, RayTaskError(str(row["error"])))
            continue
        try:
            on_record(ImageRecord.from_dict(json.loads(row["record"])), None)
        except Exception as exc:
            on_failure(task, exc)
    stats.wall_s = time.perf_counter() - t0
    return stats

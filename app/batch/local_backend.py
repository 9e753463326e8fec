"""The local backend: one engine, three overlapping stages.

loader threads (decode, read prompts, engine.prepare)  ->  the calling thread (image encoder,
batched with engine.set_images on a GPU; prompt decoder)  ->  finisher threads (measure, judge,
write outputs, store, ledger; one by default, several next to a GPU where the CPU has cores to
spare). Bounded queues between the stages keep memory flat: at most `queue_size` images wait for
the encoder and `queue_size` for the finishers. torch, OpenCV and numpy release the GIL in their
heavy loops, so the stages run in parallel.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from app.batch import faults
from app.batch.inspect_image import ImageRecord, Job, Loaded, Task, encode, finish, load, segment
from sam_engine.auto_masks import AutoMaskGenerator

log = logging.getLogger(__name__)

OnRecord = Callable[[ImageRecord, Loaded], None]
OnFailure = Callable[[Task, BaseException], None]


@dataclass
class PipelineStats:
    """Where the time went: encoder busy seconds (device-synchronised) vs wall seconds."""

    wall_s: float = 0.0
    encoder_s: float = 0.0
    encoder_calls: int = 0
    images_encoded: int = 0

    @property
    def encoder_utilisation(self) -> float:
        return self.encoder_s / self.wall_s if self.wall_s else 0.0


def _sync_fn(engine) -> Callable[[], None]:
    if str(getattr(engine.info, "device", "cpu")).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def run_local(engine, tasks: Iterable[Task], job: Job, on_record: OnRecord,
              on_failure: OnFailure, *, loaders: int = 2, queue_size: int = 4,
              batch_size: int = 1, finishers: int = 1) -> PipelineStats:
    """Inspect `tasks` with `engine`; on_record / on_failure are called on a finisher thread,
    one call at a time (in task order with one finisher). Returns the timing figures."""
    stats = PipelineStats()
    t_start = time.perf_counter()
    prepare = getattr(engine, "prepare", None)
    set_images = getattr(engine, "set_images", None) if batch_size > 1 else None
    generator = AutoMaskGenerator(engine, job.auto) if job.auto is not None else None
    plan = job.find.plan(job.recipe) if job.find is not None else None
    sync = _sync_fn(engine)
    done_q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))

    report = threading.Lock()  # on_record / on_failure run one at a time

    def finisher() -> None:
        while (item := done_q.get()) is not None:
            kind, task, payload = item
            try:
                if kind == "failed":
                    raise payload
                record = finish(payload, job, engine.info)
                with report:
                    on_record(record, payload.loaded)
            except Exception as exc:  # one image's failure must not stop the others
                with report:
                    on_failure(task, exc)
        done_q.put(None)  # pass the end on to the next finisher

    fins = [threading.Thread(target=finisher, name=f"batch-finish-{i}", daemon=True)
            for i in range(max(1, finishers))]
    for fin in fins:
        fin.start()
    pool = ThreadPoolExecutor(max(1, loaders), thread_name_prefix="batch-load")
    pending: deque[tuple[Task, Future]] = deque()
    it = iter(tasks)
    window = max(1, queue_size) + max(1, loaders)

    def fill() -> None:
        while len(pending) < window:
            task = next(it, None)
            if task is None:
                return
            pending.append((task, pool.submit(load, task, job, prepare)))

    def encode_all(batch: list[Loaded]) -> list:
        t0 = time.perf_counter()
        try:
            if set_images is not None and len(batch) > 1:
                try:
                    return set_images([b.prepared if b.prepared is not None else b.rgb
                                       for b in batch])
                except Exception:  # find the image at fault by encoding one at a time
                    log.debug("batched encode failed; encoding one at a time", exc_info=True)
            handles = []
            for b in batch:
                try:
                    handles.append(encode(engine, b))
                except Exception as exc:
                    handles.append(exc)
            return handles
        finally:
            sync()
            dt = time.perf_counter() - t0
            stats.encoder_s += dt
            stats.encoder_calls += 1
            stats.images_encoded += len(batch)
            for b in batch:
                b.seconds["encode"] = dt / len(batch)

    try:
        fill()
        while pending:
            batch: list[Loaded] = []
            while pending and len(batch) < batch_size:
                task, fut = pending.popleft()
                try:
                    batch.append(fut.result())
                except Exception as exc:
                    done_q.put(("failed", task, exc))
            fill()
            if not batch:
                continue
            for loaded, handle in zip(batch, encode_all(batch), strict=True):
                task = loaded.task
                if isinstance(handle, BaseException):
                    done_q.put(("failed", task, handle))
                    continue
                faults.reach("after_encode")
                try:
                    done_q.put(("segmented", task, segment(engine, handle, loaded, job, generator,
                                                                   plan)))
                except Exception as exc:
                    done_q.put(("failed", task, exc))
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        done_q.put(None)  # whatever reached the finishers is still written out
        for fin in fins:
            fin.join()
        stats.wall_s = time.perf_counter() - t_start
    return stats

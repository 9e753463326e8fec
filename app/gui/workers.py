"""Worker threads: the engine's encoder and decoder never run on the UI thread.

EngineHost (UI thread) owns three QThreads: the encoder worker loads the engine, decodes image
files and computes embeddings one job at a time; the decoder worker runs predict for the latest
prompt (older pending requests are dropped: only the newest prompt state matters); the thumbnail
worker makes the folder's thumbnails. The host decides what the encoder does next (the current
image first, then the next `prefetch` images of the folder) and keeps the prepared images in a
small LRU, so moving to the next image usually finds its embedding ready. A running encoder job
cannot be interrupted: jumping far away while a prefetch encodes waits for that one job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.gui.images import LoadedImage, load_for_display, make_thumbnail
from app.gui.mask_geometry import MaskShape, mask_shape
from sam_engine.errors import SamEngineError
from sam_engine.prompts import Prompts
from sam_engine.results import ImageHandle, Masks

log = logging.getLogger(__name__)


def describe_error(exc: BaseException, what: str) -> str:
    """A sentence for the message bar: what failed and what to do."""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return (f"out of memory while {what}: close other programs, use a smaller image or a "
                "smaller model (sam-inspect gui --model vit_b)")
    if isinstance(exc, SamEngineError | OSError):
        return f"{what} failed: {exc}"
    log.exception("unexpected error while %s", what)
    return f"{what} failed: unexpected {type(exc).__name__}: {exc} (details in the log)"


def in_fresh_thread(fn: Callable, *args):
    """fn(*args) on a new thread that ends with it (its exception re-raised here).

    Why: libgomp, PyTorch's CPU thread pool, keeps a team of worker threads for every thread
    that ran a parallel region, for that thread's lifetime. Once it manages more threads than
    there are cores, all teams stop spinning between regions and sleep instead, and the decoder
    thread's many small PyTorch operators got 2-2.5x slower (measured on 2 cores: 45 -> 116 ms
    per decode after one encode on a second long-lived thread, 52 ms when that thread ended).
    So the encoder's jobs (engine load, embeddings) run on threads that end, and only the
    decoder thread keeps a team.
    """
    out: list = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except BaseException as exc:  # handed to the caller's thread
            err.append(exc)

    thread = threading.Thread(target=run, name="sam-inspect-encoder-job", daemon=True)
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


def encode(engine, rgb: np.ndarray) -> ImageHandle:
    """The image's handle through the engine's prepare/set_prepared when it has them."""
    prepare = getattr(engine, "prepare", None)
    set_prepared = getattr(engine, "set_prepared", None)
    if prepare is not None and set_prepared is not None:
        return set_prepared(prepare(rgb))
    return engine.set_image(rgb)


@dataclass
class Prepared:
    """An image ready for prompts: decoded, with its embedding."""

    image: LoadedImage
    handle: ImageHandle
    encode_ms: float


@dataclass(frozen=True)
class DecodeRequest:
    key: int  # region uid
    handle: ImageHandle
    prompts: Prompts


@dataclass
class DecodeResult:
    key: int
    masks: Masks
    shape: MaskShape | None  # of the best candidate
    decode_ms: float  # predict + the best mask's upsampling
    predict_ms: float = 0.0  # engine.predict (the decoder)
    upsample_ms: float = 0.0  # the best candidate at full size
    shape_ms: float = 0.0  # its MaskShape (crop, outline)


class EncoderWorker(QObject):
    engineReady = Signal(object)
    engineFailed = Signal(str)
    loaded = Signal(object, object)  # path, LoadedImage
    encoded = Signal(object, object)  # path, Prepared
    failed = Signal(object, str)  # path, message
    done = Signal(object)  # path (after loaded/encoded/failed)

    def __init__(self) -> None:
        super().__init__()
        self.engine = None

    @Slot(object)
    def load_engine(self, factory: Callable[[], object]) -> None:
        try:
            self.engine = in_fresh_thread(factory)
        except Exception as exc:  # shown in the window; the app keeps running
            self.engineFailed.emit(describe_error(exc, "loading the engine"))
            return
        self.engineReady.emit(self.engine)

    @Slot(object)
    def run_job(self, path: Path) -> None:
        try:
            image = load_for_display(path)
            self.loaded.emit(path, image)
            t0 = time.perf_counter()
            handle = in_fresh_thread(encode, self.engine, image.rgb)
            self.encoded.emit(path, Prepared(image, handle, (time.perf_counter() - t0) * 1e3))
        except Exception as exc:
            self.failed.emit(path, describe_error(exc, f"opening {path.name}"))
        finally:
            self.done.emit(path)


class DecoderWorker(QObject):
    decoded = Signal(object)  # DecodeResult
    failed = Signal(object, str)  # key, message
    done = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.engine = None

    @Slot(object)
    def run(self, req: DecodeRequest) -> None:
        try:
            t0 = time.perf_counter()
            masks = self.engine.predict(req.handle, req.prompts, multimask_output=True)
            t1 = time.perf_counter()
            best = masks.best(0)
            t2 = time.perf_counter()
            shape = mask_shape(best)
            t3 = time.perf_counter()
            self.decoded.emit(DecodeResult(req.key, masks, shape, (t2 - t0) * 1e3,
                                           (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
        except Exception as exc:
            self.failed.emit(req.key, describe_error(exc, "segmenting"))
        finally:
            self.done.emit()


class ThumbnailWorker(QObject):
    thumbnail = Signal(object, object)  # path, RGB uint8 array or None

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0  # bumped from the UI thread to cancel a running batch
        self._lock = threading.Lock()

    def cancel(self) -> int:
        with self._lock:
            self.generation += 1
            return self.generation

    @Slot(object, int)
    def run(self, paths: list[Path], generation: int) -> None:
        for path in paths:
            with self._lock:
                if generation != self.generation:
                    return
            try:
                thumb = make_thumbnail(path)
            except Exception:  # the folder list marks the file unreadable
                thumb = None
            self.thumbnail.emit(path, thumb)


class EngineHost(QObject):
    """The UI thread's side of the workers: scheduling, prefetch, the prepared-image LRU."""

    engineReady = Signal(object)
    engineFailed = Signal(str)
    imageLoaded = Signal(object, object)  # path, LoadedImage (before its embedding)
    imageReady = Signal(object, object)  # path, Prepared
    imageFailed = Signal(object, str)
    busy = Signal(object)  # path being encoded, or None when the encoder is idle
    decoded = Signal(object)  # DecodeResult
    decodeFailed = Signal(object, str)
    thumbnail = Signal(object, object)

    _load_engine = Signal(object)
    _encode = Signal(object)
    _decode = Signal(object)
    _thumbs = Signal(object, int)

    def __init__(self, prefetch: int = 2, parent=None) -> None:
        super().__init__(parent)
        self.prefetch = max(0, int(prefetch))
        self.engine = None
        self.paths: list[Path] = []
        self.current: Path | None = None
        self.ready: OrderedDict[Path, Prepared] = OrderedDict()
        self.failed: dict[Path, str] = {}
        self.encoding: Path | None = None
        self.decoding = False
        self.pending_decode: DecodeRequest | None = None
        self.encode_jobs = 0  # encoder jobs run (each may be a cache hit inside the engine)

        self._threads: list[QThread] = []
        self._enc = EncoderWorker()
        self._dec = DecoderWorker()
        self._thumb = ThumbnailWorker()
        for worker in (self._enc, self._dec, self._thumb):
            thread = QThread(self)
            worker.moveToThread(thread)
            thread.start()
            self._threads.append(thread)
        self._load_engine.connect(self._enc.load_engine)
        self._encode.connect(self._enc.run_job)
        self._decode.connect(self._dec.run)
        self._thumbs.connect(self._thumb.run)
        self._enc.engineReady.connect(self._on_engine)
        self._enc.engineFailed.connect(self.engineFailed)
        self._enc.loaded.connect(self._on_loaded)
        self._enc.encoded.connect(self._on_encoded)
        self._enc.failed.connect(self._on_failed)
        self._enc.done.connect(self._on_done)
        self._dec.decoded.connect(self._on_decoded)
        self._dec.failed.connect(self.decodeFailed)
        self._dec.done.connect(self._on_decode_done)
        self._thumb.thumbnail.connect(self.thumbnail)

    @property
    def capacity(self) -> int:
        """Prepared images kept: the current one, the prefetched ones and the previous one."""
        return self.prefetch + 2

    # ------------------------------------------------------------------ engine
    def load_engine(self, factory: Callable[[], object]) -> None:
        """Build the engine on the encoder thread (importing torch and loading weights takes
        seconds)."""
        self._load_engine.emit(factory)

    def _on_engine(self, engine) -> None:
        self.engine = engine
        self._dec.engine = engine
        self.ready.clear()
        self.engineReady.emit(engine)
        self._schedule()

    # ------------------------------------------------------------------ images
    def set_folder(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.ready.clear()
        self.failed.clear()
        self.current = None
        generation = self._thumb.cancel()
        self._thumbs.emit(list(paths), generation)

    def open(self, path: Path) -> Prepared | None:
        """Make path current; returns its Prepared at once when it is ready (prefetched), else
        imageLoaded / imageReady / imageFailed follow."""
        self.current = path
        self.failed.pop(path, None)  # a retry
        prepared = self.ready.get(path)
        if prepared is not None:
            self.ready.move_to_end(path)
        self._schedule()
        return prepared

    def retry(self, path: Path) -> None:
        self.failed.pop(path, None)
        self._schedule()

    def _wanted(self) -> list[Path]:
        """What the encoder should hold: the current image, then the next ones."""
        if self.current is None:
            return []
        want = [self.current]
        if self.current in self.paths:
            i = self.paths.index(self.current)
            want += self.paths[i + 1 : i + 1 + self.prefetch]
        return want

    def _schedule(self) -> None:
        if self.engine is None or self.encoding is not None:
            return
        for path in self._wanted():
            if path not in self.ready and path not in self.failed:
                self.encoding = path
                self.encode_jobs += 1
                self.busy.emit(path)
                self._encode.emit(path)
                return
        self.busy.emit(None)

    def _on_loaded(self, path: Path, image: LoadedImage) -> None:
        if path == self.current:
            self.imageLoaded.emit(path, image)

    def _on_encoded(self, path: Path, prepared: Prepared) -> None:
        self.ready[path] = prepared
        self.ready.move_to_end(path)
        keep = set(self._wanted())
        while len(self.ready) > self.capacity:
            victim = next((p for p in self.ready if p not in keep), None)
            if victim is None:
                break
            del self.ready[victim]
        if path == self.current:
            self.imageReady.emit(path, prepared)

    def _on_failed(self, path: Path, message: str) -> None:
        self.failed[path] = message
        if path == self.current:
            self.imageFailed.emit(path, message)

    def _on_done(self, path: Path) -> None:
        self.encoding = None
        self._schedule()

    # ------------------------------------------------------------------ prompts
    def decode(self, request: DecodeRequest) -> None:
        """Decode on the worker; while it is busy only the newest request waits."""
        if self.decoding:
            self.pending_decode = request
            return
        self.decoding = True
        self._decode.emit(request)

    def _on_decoded(self, result: DecodeResult) -> None:
        self.decoded.emit(result)

    def _on_decode_done(self) -> None:
        self.decoding = False
        if self.pending_decode is not None:
            req, self.pending_decode = self.pending_decode, None
            self.decode(req)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, wait_ms: int | None = None) -> bool:
        """Stop the threads; True when all ended (an encoder job cannot be interrupted)."""
        self._thumb.cancel()
        for thread in self._threads:
            thread.quit()
        ok = True
        for thread in self._threads:
            ok &= thread.wait() if wait_ms is None else thread.wait(wait_ms)
        return ok


class JobCancelled(Exception):
    """Raised from a background job's progress callback once the inspector cancelled it."""


CANCELLED, NO_DATA, ERROR = "cancelled", "no data", "error"


class TuneWorker(QObject):
    """Runs one tuning job, job(on_step, on_phase) -> outcome, on its own thread. on_step(step,
    total) and on_phase(text) report progress and raise JobCancelled once cancel() was called,
    which is how a cancel reaches the job (between two training steps)."""

    progress = Signal(int, int)  # step, total
    phase = Signal(str)
    finished = Signal(object)  # the job's outcome
    failed = Signal(str, str)  # CANCELLED / NO_DATA / ERROR, message

    def __init__(self, job: Callable[[Callable, Callable], object]) -> None:
        super().__init__()
        self.job = job
        self.cancelled = threading.Event()
        self.last_step = (0, 0)

    def cancel(self) -> None:
        self.cancelled.set()

    def on_step(self, step: int, total: int) -> None:
        self.last_step = (step, total)
        if self.cancelled.is_set():
            raise JobCancelled
        self.progress.emit(step, total)

    def on_phase(self, text: str) -> None:
        if self.cancelled.is_set():
            raise JobCancelled
        self.phase.emit(text)

    @Slot()
    def run(self) -> None:
        from sam_engine.learned.data import DataError

        try:
            outcome = self.job(self.on_step, self.on_phase)
        except JobCancelled:
            step, total = self.last_step
            self.failed.emit(CANCELLED, f"stopped at step {step} of {total}" if total
                             else "stopped before training began")
        except DataError as exc:
            self.failed.emit(NO_DATA, str(exc))
        except Exception as exc:  # shown to the inspector; the window keeps working
            self.failed.emit(ERROR, describe_error(exc, "tuning"))
        else:
            self.finished.emit(outcome)


class JobRunner(QObject):
    """The UI thread's side of a long job (tuning, finding): one at a time, each on a thread
    that ends with it (see in_fresh_thread for why threads that ran PyTorch should not
    linger). Subclasses say which worker runs the job and which of its signals to relay."""

    finished = Signal(object)
    failed = Signal(str, str)
    what = "a job"

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker = None

    def make_worker(self, job):
        raise NotImplementedError

    def relay(self, worker) -> None:
        """Connect the worker's own signals (progress, ...) to this runner's."""

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, job) -> None:
        if self.running:
            raise RuntimeError(f"{self.what} is already running")
        worker, thread = self.make_worker(job), QThread(self)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        self.relay(worker)
        worker.finished.connect(self._on_finished)  # queued: the runner lives on the UI thread
        worker.failed.connect(self._on_failed)
        self._worker, self._thread = worker, thread
        thread.start()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    @Slot(object)
    def _on_finished(self, outcome) -> None:
        self._end()
        self.finished.emit(outcome)

    @Slot(str, str)
    def _on_failed(self, kind: str, text: str) -> None:
        self._end()
        self.failed.emit(kind, text)

    def _end(self) -> None:
        thread, self._thread, self._worker = self._thread, None, None
        if thread is not None:
            thread.quit()
            thread.wait()  # the job has returned: its thread only has to leave its loop
            thread.deleteLater()

    def shutdown(self, wait_ms: int | None = None) -> bool:
        """Cancel the job and stop its thread; True when it ended (a model call in progress
        finishes first: the job stops at its next step)."""
        if self._thread is None:
            return True
        self.cancel()
        self._thread.quit()
        ended = self._thread.wait() if wait_ms is None else self._thread.wait(wait_ms)
        if ended:
            self._thread = self._worker = None
        return ended


class TuneRunner(JobRunner):
    """A tuning job's runner: relays its step progress and phase."""

    progress = Signal(int, int)
    phase = Signal(str)
    what = "a tuning job"

    def make_worker(self, job: Callable[[Callable, Callable], object]) -> TuneWorker:
        return TuneWorker(job)

    def relay(self, worker: TuneWorker) -> None:
        worker.progress.connect(self.progress)
        worker.phase.connect(self.phase)

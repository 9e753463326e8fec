"""GUI latency: the longest UI-thread stall while embeddings are computed, and the time from a
click to the painted mask with a cached embedding.

Runs the real window offscreen (QT_QPA_PLATFORM=offscreen unless set) on a folder of synthetic
part images. A 1 ms precise timer on the UI thread records the gaps between its ticks while the
encoder worker computes the current image's embedding and prefetches the next ones: the longest
gap is the longest time the window could not react. Then real mouse clicks on the canvas (Esc
before each, so each is a first click), each followed by a second point near it that refines
its mask (the decoder then also gets the previous low-res mask: "refine_click"), are timed from
the mouse press to the end of the paint that shows the mask (Annotator.latency), with a
breakdown: predict, upsampling the best candidate and its MaskShape on the decoder thread, the
paint on the UI thread. Random weights give ragged masks over most of the image
(mask_percent_of_image): a worst case for the mask geometry and the paint, not a typical defect.

    python benchmarks/gui_latency.py --model vit_b --json results/gui_vit_b.json
    python benchmarks/gui_latency.py --model classic --clicks 50
    python benchmarks/gui_latency.py --model vit_b --click-decoder torch   # PyTorch decoder only

Models: vit_b / vit_l / vit_h (segment-anything with RANDOM weights: speed does not depend on
the weights' values), classic (the default engine), tiny (the tests' tiny SAM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import write_json  # noqa: E402


def build_engine(model: str, click_decoder: str = "auto"):
    if model == "classic":
        from sam_engine.classic import ClassicEngine

        return ClassicEngine()
    import torch

    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.sam.backend import SamEngine

    torch.manual_seed(0)  # the same random weights, hence the same masks, in every run
    if model == "tiny":
        from tests.sam_factory import tiny_sam

        sam = tiny_sam(0)
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[model](checkpoint=None)
    click = None if click_decoder == "auto" else False
    # memory cache only (the onnxruntime click decoder is then exported at the first image)
    return SamEngine(sam, model, device="cpu", cache=EmbeddingCache(), click_onnx=click)


def write_images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    import cv2

    from sam_engine.synthetic.generator import make_part

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        part = make_part(seed=100 + i, size=size)
        path = folder / f"part_{i:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(part.image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_b",
                    choices=("vit_b", "vit_l", "vit_h", "classic", "tiny"))
    ap.add_argument("--images", type=int, default=3, help="images in the folder (1 + prefetch)")
    ap.add_argument("--size", default="800x1280", help="HxW of the images")
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--click-decoder", default="auto", choices=("auto", "torch"),
                    help="auto: SamEngine's default (onnxruntime for single prompts on a CPU "
                    "when installed); torch: PyTorch's fast decoder for every prompt")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QEventLoop, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow
    from app.gui.options import GuiOptions
    from app.gui.settings import Settings

    if args.threads and args.model != "classic":
        import torch

        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    app = QApplication.instance() or QApplication([])
    built: dict[str, float] = {}

    def factory():
        # called on the encoder worker, as the window's own engine factory is
        t0 = time.perf_counter()
        engine = build_engine(args.model, args.click_decoder)
        built["s"] = time.perf_counter() - t0
        return engine

    tmp = Path(tempfile.mkdtemp(prefix="gui_latency_"))
    paths = write_images(tmp / "parts", args.images, (h, w))
    opts = GuiOptions(folder=None, db=str(tmp / "i.db"), prefetch=args.images - 1)
    win = MainWindow(opts, engine_factory=factory, settings=Settings.at(tmp / "s.ini"))
    win.resize(1400, 900)
    win.show()

    # Block like the real event loop does until something happens. The (flags, ms) overload of
    # processEvents drops WaitForMoreEvents and returns at once, so looping on it spins a core
    # that the encoder and decoder need; the one-argument overload blocks, and this timer wakes
    # it to check the deadline.
    wake = QTimer()
    wake.setInterval(50)
    wake.start()

    def pump(cond, timeout_s: float) -> None:
        end = time.perf_counter() + timeout_s
        while not cond():
            if time.perf_counter() > end:
                win.close()
                raise SystemExit(f"timed out: ready {list(win.host.ready)}, failed "
                                 f"{win.host.failed}, encoding {win.host.encoding}, "
                                 f"engine {win.host.engine}")
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)

    pump(lambda: win.host.engine is not None, 600)
    engine, build_s = win.host.engine, built["s"]

    # --- UI-thread stalls while the encoder works (current image + prefetch)
    ticks: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    t_open = time.perf_counter()
    win.open_folder(paths[0].parent)  # lists the folder, starts the encoder, returns
    open_ms = (time.perf_counter() - t_open) * 1e3
    timer.start()
    pump(lambda: len(win.host.ready) == len(paths) and win.host.encoding is None, 3600)
    t_all = time.perf_counter()
    timer.stop()
    gaps = np.diff(np.asarray(ticks)) * 1e3 if len(ticks) > 1 else np.zeros(0)
    first_ready = win.annotator.prepared is not None
    encode_ms = [p.encode_ms for p in win.host.ready.values()]

    # --- click to painted mask, cached embedding
    pump(lambda: win.annotator.prepared is not None, 60)
    # per kind of click ("first": after Esc; "refine": a second point on the same region, so
    # the decoder also gets the previous low-res mask): latencies (decode ms, total ms), the
    # paint that showed the mask, and the DecodeResults (predict / upsample / shape times)
    figures = {k: {"latencies": [], "paints": [], "results": []} for k in ("first", "refine")}
    kind = "first"
    win.host.decoded.connect(lambda r: figures[kind]["results"].append(r))

    def on_latency(decode_ms: float, total_ms: float) -> None:
        figures[kind]["latencies"].append((decode_ms, total_ms))
        figures[kind]["paints"].append(win.canvas.last_paint_ms)

    win.annotator.latency.connect(on_latency)
    rng = np.random.default_rng(0)
    vp = win.canvas.viewport()

    def click(x: float, y: float) -> None:
        n = len(figures[kind]["latencies"])
        QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         win.canvas.view_pos_of(x, y))
        pump(lambda: len(figures[kind]["latencies"]) > n, 60)

    for _ in range(args.clicks):
        x, y = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        kind = "first"
        click(x, y)
        kind = "refine"
        click(x + rng.uniform(-0.05, 0.05) * w, y + rng.uniform(-0.05, 0.05) * h)
        QTest.keyClick(win.canvas, Qt.Key.Key_Escape)
        app.processEvents()
    win.close()

    def click_figures(f: dict) -> dict:
        results = f["results"]
        return {
            "click_to_painted_mask_ms": stats([p for _, p in f["latencies"]]),
            "decode_ms": stats([d for d, _ in f["latencies"]]),
            "breakdown_ms": {
                "predict": stats([r.predict_ms for r in results]),
                "upsample_best": stats([r.upsample_ms for r in results]),
                "mask_shape": stats([r.shape_ms for r in results]),
                "paint": stats(f["paints"]),
                "mask_percent_of_image": stats(
                    [100 * r.shape.area_px / (h * w) if r.shape else 0.0 for r in results]),
            },
        }

    result = {
        "model": args.model,
        "engine": engine.info.describe(),
        "image": f"{h}x{w}",
        "images": len(paths),
        "engine_build_s": round(build_s, 2),
        "encode_ms_per_image": [round(v, 1) for v in encode_ms],
        "encoding_wall_s": round(t_all - t_open, 2),
        "open_folder_call_ms": round(open_ms, 1),
        "ui_ticks": len(ticks),
        "ui_stall_ms": stats(list(gaps)),
        **click_figures(figures["first"]),
        "refine_click": click_figures(figures["refine"]),
        "first_image_ready": first_ready,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

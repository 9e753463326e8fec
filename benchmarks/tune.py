"""The site protocol for tuning, and the learned engine's speed, on this machine.

Each real dataset under ../shared/data/defects (neu_seg, crackforest) is one site: its images
are split 50/50 by group hash (app.tuning: the same split `sam-inspect tune --held-out 0.5`
makes), the learned base is tuned on the first half's masks, and the second half is
prompted with each instance's box and with one click at its most interior pixel. Beside the
tuned model, on the same held-out instances: the learned base (synthetic data only), the
classic engine and box-fill, per class, and a learning curve (tuned on the first 10 / 30 /
100 masks). Speed: tuning time per 1000 masks, one click with the image already set (PyTorch
and the ONNX export), and set_image on a 1-megapixel image.

    python benchmarks/tune.py --json benchmarks/results/tune_sites.json

Run on a quiet machine, one job at a time. The research-only data is read in place, never
copied; no weights trained on it are kept (the tuned models live in a temporary registry).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"


def _table(h) -> dict:
    return h.table()


def site(name: str, args) -> dict:
    from app.tuning.run import TuneRequest, tune
    from sam_engine.classic import ClassicEngine
    from sam_engine.learned.data import read_folder, split
    from sam_engine.learned.heldout import evaluate
    from sam_engine.learned.train import TrainSettings

    data = read_folder(DATA, dataset=name)
    train_set, held = split(data.images, 0.5, salt=name)
    classic = evaluate(ClassicEngine(), held, progress=True, desc=f"{name} classic")
    req = TuneRequest(data=data, name=f"bench-{name}", recipe=name, held_out=0.5, salt=name,
                      settings=TrainSettings(steps=args.steps, batch=args.batch, lr=args.lr),
                      curve=tuple(args.curve))
    out = tune(req, progress=True)
    n_train = sum(len(i.instances) for i in train_set)
    return {
        "images": {"train": len(train_set), "held_out": len(held)},
        "masks": {"train": n_train, "held_out": len(out.after.classes)},
        "tuned": _table(out.after), "learned_base": _table(out.before),
        "classic": _table(classic), "curve": out.curve,
        "tune_seconds": round(out.train_seconds, 1),
        "tune_seconds_per_1000_masks_equivalent": round(
            out.train_seconds * 1000 / max(n_train, 1), 1),
        "steps": args.steps, "batch": args.batch,
        "gate": out.reason,
    }


def speed(args) -> dict:
    from sam_engine.learned.engine import load_learned
    from sam_engine.prompts import Prompts
    from sam_engine.synthetic.generator import make_part

    part = make_part(11, size=(866, 1155))  # 1.0 megapixel
    d = part.instances[0]
    click = Prompts.from_points([d.point], [1])
    box = Prompts.from_boxes([d.bbox])
    out = {"image": "866x1155 synthetic part (1.0 MP)", "threads": torch.get_num_threads()}
    eng = load_learned(device="cpu")

    def timed(fn, n=args.repeats):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1000)
        return {"p50_ms": round(statistics.median(ts), 2),
                "p90_ms": round(float(np.percentile(ts, 90)), 2)}

    out["set_image_torch"] = timed(lambda: eng.set_image(part.image))
    h = eng.set_image(part.image)
    out["click_torch"] = timed(lambda: eng.predict(h, click).best())
    out["box_torch"] = timed(lambda: eng.predict(h, box).best())
    try:
        from sam_engine.onnx.learned_export import export_learned
        from sam_engine.onnx.learned_runtime import OnnxLearnedEngine
    except ImportError as exc:  # onnx extra not installed
        out["onnx"] = f"skipped: {exc}"
        return out
    with tempfile.TemporaryDirectory() as tmp:
        export_learned(eng.info.checkpoint, Path(tmp) / "export")
        onnx = OnnxLearnedEngine(Path(tmp) / "export", threads=torch.get_num_threads())
        ho = onnx.set_image(part.image)
        out["set_image_onnx"] = timed(lambda: onnx.set_image(part.image))
        out["click_onnx"] = timed(lambda: onnx.predict(ho, click).best())
        out["box_onnx"] = timed(lambda: onnx.predict(ho, box).best())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", nargs="*", default=["neu_seg", "crackforest"])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--curve", type=int, nargs="*", default=[10, 30, 100])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is absent: the site protocol needs the research data", file=sys.stderr)
        return 2
    figures = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores", "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as reg:
        os.environ["SAM_INSPECT_TUNED"] = reg  # tuned models on research data are not kept
        for name in args.sites:
            figures[name] = site(name, args)
            print(name, {k: figures[name][k] for k in ("tuned", "learned_base", "classic")})
            write_json(args.json, figures)
    if not args.no_speed:
        figures["speed"] = speed(args)
        print(figures["speed"])
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

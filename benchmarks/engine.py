"""Engine latency: our SamEngine vs Meta's SamPredictor, same random-weight model, same image.

    python benchmarks/engine.py --model vit_b [--json results/bench_vit_b.json] [--device cpu]

Speed does not depend on the weights' values, so the official architectures are built with
random weights (no download). Prints a Markdown table (copied into the README) and optionally
writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment_anything import SamPredictor  # noqa: E402

from benchmarks.common import random_sam, write_json  # noqa: E402
from sam_engine.embedding_cache import EmbeddingCache  # noqa: E402
from sam_engine.prompts import Prompts  # noqa: E402
from sam_engine.sam.backend import SamEngine  # noqa: E402
from sam_engine.sam.device import choose_device  # noqa: E402

BOXES = np.array(
    [[100, 100, 300, 260], [420, 90, 640, 300], [700, 120, 900, 330], [120, 420, 380, 640],
     [560, 400, 1100, 720]], dtype=np.float64
)
CLICK = np.array([[610.0, 380.0]])


def timed(fn, n: int, warmup: int = 1, sync=lambda: None) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def test_image(h: int = 800, w: int = 1280) -> np.ndarray:
    try:
        from sam_engine.synthetic.generator import make_part

        return make_part(seed=3, size=(h, w)).image
    except ImportError:  # generator not installed: a textured random image is as good for speed
        rng = np.random.default_rng(3)
        return (rng.random((h, w, 3)) * 255).astype(np.uint8)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_b", choices=("vit_b", "vit_l", "vit_h", "vit_t"))
    ap.add_argument("--device", default=None, help="cpu, cuda (default: best available)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--encode-reps", type=int, default=3)
    ap.add_argument("--decode-reps", type=int, default=40)
    args = ap.parse_args()

    torch.manual_seed(0)
    choice = choose_device(args.device)
    dev = torch.device(choice.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sam = random_sam(args.model).to(dev)
    rgb = test_image()
    h, w = rgb.shape[:2]

    # --- baseline: Meta's SamPredictor, fp32, as documented
    base = SamPredictor(sam)
    base_set = timed(lambda: base.set_image(rgb), args.encode_reps, sync=sync)
    labels = np.array([1])
    base_click = timed(lambda: base.predict(CLICK, labels, multimask_output=True),
                       args.decode_reps, sync=sync)
    tboxes = base.transform.apply_boxes_torch(torch.as_tensor(BOXES, device=dev).float(), (h, w))
    base_boxes = timed(lambda: base.predict_torch(None, None, tboxes, multimask_output=False),
                       max(args.decode_reps // 2, 5), sync=sync)
    ref_masks, _, _ = base.predict(CLICK, labels, multimask_output=True)

    # --- ours: SamEngine with a disk cache
    with tempfile.TemporaryDirectory() as tmp:
        def fresh_engine() -> SamEngine:
            return SamEngine(sam, args.model, device=choice,
                             cache=EmbeddingCache(disk_dir=Path(tmp)))

        eng = fresh_engine()
        ours_set = []
        for _ in range(args.encode_reps):
            eng.cache.clear()
            for f in Path(tmp).glob("*.emb"):  # the embeddings (not the onnx-click folder)
                f.unlink()
            ours_set += timed(lambda: eng.set_image(rgb), 1, warmup=0, sync=sync)
        handle = eng.set_image(rgb)
        click = Prompts.from_points(CLICK)
        boxes = Prompts.from_boxes(BOXES)
        ours_click_best = timed(lambda: eng.predict(handle, click).best(), args.decode_reps,
                                sync=sync)
        ours_click_all = timed(lambda: eng.predict(handle, click).masks, args.decode_reps,
                               sync=sync)
        ours_boxes = timed(lambda: eng.predict(handle, boxes, multimask_output=False).masks,
                           max(args.decode_reps // 2, 5), sync=sync)
        ours = eng.predict(handle, click).masks[0]
        # cached reopen: a new process-like engine (empty memory cache), embedding on disk
        reopen = []
        for _ in range(10):
            e2 = fresh_engine()
            reopen += timed(lambda e2=e2: e2.set_image(rgb), 1, warmup=0, sync=sync)
        emb_bytes = handle.features.embedding.numel() * 4

    iou = [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(ours, ref_masks,
                                                                          strict=True)]
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
    res = {
        "model": args.model, "device": choice.device, "device_name": device_name or "cpu",
        "threads": torch.get_num_threads(), "image": [h, w], "torch": torch.__version__,
        "embedding_bytes": emb_bytes,
        "baseline": {"set_image_ms": statistics.median(base_set),
                     "click_p50": pct(base_click, 50), "click_p99": pct(base_click, 99),
                     "boxes5_p50": pct(base_boxes, 50), "boxes5_p99": pct(base_boxes, 99)},
        "ours": {"set_image_ms": statistics.median(ours_set),
                 "click_best_p50": pct(ours_click_best, 50),
                 "click_best_p99": pct(ours_click_best, 99),
                 "click_all_p50": pct(ours_click_all, 50),
                 "click_all_p99": pct(ours_click_all, 99),
                 "boxes5_p50": pct(ours_boxes, 50), "boxes5_p99": pct(ours_boxes, 99),
                 "reopen_cached_p50": pct(reopen, 50), "reopen_cached_p99": pct(reopen, 99)},
        "click_mask_iou_vs_baseline": iou,
    }
    b, o = res["baseline"], res["ours"]
    print(f"\n{args.model}, random weights, {h}x{w} image, {res['device_name']} "
          f"({choice.device}, {res['threads']} threads), torch {torch.__version__}\n")
    print("| step | SamPredictor | ours | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| set_image (encoder) | {b['set_image_ms']:.0f} ms | {o['set_image_ms']:.0f} ms | "
          f"{b['set_image_ms'] / o['set_image_ms']:.2f}x |")
    print(f"| 1 click, 3 candidates, all at full res, p50 / p99 | {b['click_p50']:.1f} / "
          f"{b['click_p99']:.1f} ms | {o['click_all_p50']:.1f} / {o['click_all_p99']:.1f} ms | "
          f"{b['click_p50'] / o['click_all_p50']:.2f}x |")
    print(f"| 1 click, best candidate at full res, p50 / p99 | (same as above) | "
          f"{o['click_best_p50']:.1f} / {o['click_best_p99']:.1f} ms | "
          f"{b['click_p50'] / o['click_best_p50']:.2f}x |")
    print(f"| 5 boxes, one call, full res, p50 / p99 | {b['boxes5_p50']:.1f} / "
          f"{b['boxes5_p99']:.1f} ms | {o['boxes5_p50']:.1f} / {o['boxes5_p99']:.1f} ms | "
          f"{b['boxes5_p50'] / o['boxes5_p50']:.2f}x |")
    print(f"| reopen cached image ({emb_bytes / 2**20:.0f} MiB embedding, from disk) p50 / p99 "
          f"| {b['set_image_ms']:.0f} ms (re-encodes) | {o['reopen_cached_p50']:.1f} / "
          f"{o['reopen_cached_p99']:.1f} ms | {b['set_image_ms'] / o['reopen_cached_p50']:.0f}x |")
    print(f"\nclick mask IoU ours vs SamPredictor: {', '.join(f'{v:.4f}' for v in iou)}")
    write_json(args.json, res)


if __name__ == "__main__":
    main()

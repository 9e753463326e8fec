"""Image-encoder throughput: Meta's SamPredictor (fp32) vs our SamEngine fast path, same model.

    python benchmarks/encoder.py --model vit_h --device cuda --batch 1 8 --json PATH
    python benchmarks/encoder.py --model vit_b --device cpu --batch 1 --reps 2 --json PATH

Random weights (speed does not depend on their values; the relative-position tables are
randomised too, so the bias path is exercised). Per batch size: images/s, ms/image and peak GPU
memory of (a) SamPredictor.set_image one image at a time, fp32, as documented; (b) for batch > 1,
Meta's encoder module on the whole batch in fp32; (c) ours: SamEngine.set_images (upload,
GPU resize, encoder, embeddings back to the host cache, decoder image terms) with the embedding
cache emptied before each run; (d) our encoder forward alone. Also: embedding max |diff| and
decoded-mask IoU of ours vs SamPredictor on the same image with fixed prompts, and whether the
forward passes with CUDA sync debugging set to "error" (no host-device synchronisation).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment_anything import SamPredictor  # noqa: E402

from benchmarks.common import random_sam, write_json  # noqa: E402
from sam_engine.constants import IMG_SIZE  # noqa: E402
from sam_engine.embedding_cache import EmbeddingCache  # noqa: E402
from sam_engine.prompts import Prompts  # noqa: E402
from sam_engine.sam.backend import SamEngine  # noqa: E402
from sam_engine.sam.device import choose_device  # noqa: E402

POINTS = [[610.0, 380.0], [300.0, 200.0], [900.0, 600.0]]
BOXES = [[100, 100, 300, 260], [560, 400, 1100, 720]]


def images(n: int, h: int = 800, w: int = 1280) -> list[np.ndarray]:
    try:
        from sam_engine.synthetic.generator import make_part

        return [make_part(seed=3 + i, size=(h, w)).image for i in range(n)]
    except ImportError:
        rng = np.random.default_rng(3)
        return [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(n)]


def build(model: str) -> torch.nn.Module:
    sam = random_sam(model)
    with torch.no_grad():  # zero-initialised by Meta: make the bias path do something
        for name, p in sam.image_encoder.named_parameters():
            if "rel_pos" in name or "attention_biases" in name:
                p.normal_(0.0, 0.5)
    return sam.eval()


class Clock:
    def __init__(self, dev: torch.device) -> None:
        self.cuda = dev.type == "cuda"
        self.dev = dev

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def run(self, fn, reps: int, warmup: int = 1) -> dict:
        for _ in range(warmup):
            fn()
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.dev)
        times = []
        for _ in range(reps):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(self.dev) / 2**20 if self.cuda else None
        return {"seconds": times, "median_s": statistics.median(times), "peak_mib": peak}


def per_image(r: dict, n: int) -> dict:
    s = r["median_s"]
    return {"ms_per_image": 1e3 * s / n, "images_per_s": n / s, "peak_gpu_mib": r["peak_mib"],
            "reps": len(r["seconds"])}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def parity(sam, eng: SamEngine, rgb: np.ndarray) -> dict:
    pred = SamPredictor(sam)
    pred.set_image(rgb)
    eng.cache.clear()
    h = eng.set_image(rgb)
    diff = float((h.features.embedding - pred.features).abs().max())
    ious = []
    for pt in POINTS:
        ref, _, _ = pred.predict(np.array([pt]), np.array([1]), multimask_output=True)
        got = eng.predict(h, Prompts.from_points([pt])).masks[0]
        ious += [iou(g, r) for g, r in zip(got, ref, strict=True)]
    for box in BOXES:
        ref, _, _ = pred.predict(box=np.array(box), multimask_output=False)
        got = eng.predict(h, Prompts.from_boxes([box]), multimask_output=False).masks[0]
        ious.append(iou(got[0], ref[0]))
    scale = float(pred.features.abs().max())
    return {"embedding_max_abs_diff": diff, "embedding_max_abs": scale,
            "mask_iou_min": min(ious), "mask_iou_mean": float(np.mean(ious))}


def sync_free(eng: SamEngine, dev: torch.device) -> bool | None:
    """Does our forward run with torch.cuda.set_sync_debug_mode('error')?"""
    if dev.type != "cuda":
        return None
    x = torch.randn(1, 3, IMG_SIZE, IMG_SIZE, device=dev)
    torch.cuda.synchronize(dev)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            eng._run_encoder(x)
        return True
    except RuntimeError as exc:
        print(f"sync inside the forward: {exc}")
        return False
    finally:
        torch.cuda.set_sync_debug_mode("default")


def profile(eng: SamEngine, dev: torch.device, n: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    x = torch.randn(n, 3, IMG_SIZE, IMG_SIZE, device=dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with torch.no_grad(), prof(activities=acts) as p:
        eng._run_encoder(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=70))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_b", choices=("vit_b", "vit_l", "vit_h", "vit_t"))
    ap.add_argument("--device", default=None, help="cpu, cuda (default: best available)")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline-reps", type=int, default=None, help="default: --reps")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile variant")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the forward's top kernels")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    breps = args.baseline_reps or args.reps

    torch.manual_seed(0)
    choice = choose_device(args.device, args.precision)
    dev = torch.device(choice.device)
    clock = Clock(dev)
    t0 = time.perf_counter()
    sam = build(args.model).to(dev)
    build_s = time.perf_counter() - t0
    imgs = images(max(args.batch))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (
        platform.processor() or platform.machine())
    res: dict = {"model": args.model, "device": choice.device, "device_name": name,
                 "dtype": choice.dtype, "torch": torch.__version__,
                 "threads": torch.get_num_threads(), "image": list(imgs[0].shape[:2]),
                 "build_s": build_s, "baseline": {}, "ours": {}, "ours_forward": {}}

    variants = [("ours", {})]
    if dev.type == "cuda":
        variants.append(("ours_no_graphs", {"cuda_graphs": False}))
    if args.compile:
        variants.append(("ours_compiled", {"compile": True}))
    engines = {}
    for key, kwargs in variants:
        t0 = time.perf_counter()
        try:
            engines[key] = SamEngine(sam, args.model, device=choice, cache=EmbeddingCache(),
                                     batch_size=max(args.batch), **kwargs)
        except Exception as exc:  # report and go on with the other variants
            print(f"{key}: failed to load: {exc!r}")
            res.setdefault("errors", {})[key] = repr(exc)
            continue
        res.setdefault("load_s", {})[key] = time.perf_counter() - t0
        res[key], res[key + "_forward"] = {}, {}
        res.setdefault("engine_note", {})[key] = engines[key].info.note
    from sam_engine.encoders.fast import _CHOICE

    res["attention_methods"] = {str(k): v for k, v in _CHOICE.items()}
    res["parity"] = parity(sam, engines["ours"], imgs[0])
    res["sync_free_forward"] = sync_free(engines["ours"], dev)

    for n in args.batch:
        batch = imgs[:n]
        if not args.no_baseline:
            pred = SamPredictor(sam)
            r = clock.run(lambda b=batch, p=pred: [p.set_image(im) for im in b], breps)
            res["baseline"][f"set_image_x{n}"] = per_image(r, n)
            if n > 1:
                x = torch.cat([sam.preprocess(torch.as_tensor(
                    pred.transform.apply_image(im), device=dev).permute(2, 0, 1)[None].float())
                    for im in batch])
                with torch.no_grad():
                    r = clock.run(lambda x=x: sam.image_encoder(x), max(1, breps // 2))
                res["baseline"][f"module_batch{n}"] = per_image(r, n)
                del x
            del pred
        for key, eng in engines.items():
            def ours(b=batch, e=eng):
                e.cache.clear()
                e.set_images(b)
            try:
                res[key][f"batch{n}"] = per_image(clock.run(ours, args.reps), n)
                x = torch.randn(n, 3, IMG_SIZE, IMG_SIZE, device=dev)
                with torch.no_grad():
                    r = clock.run(lambda x=x, e=eng: e._run_encoder(x), args.reps)
                res[key + "_forward"][f"batch{n}"] = per_image(r, n)
            except Exception as exc:
                print(f"{key} batch {n}: failed: {exc!r}")
                res.setdefault("errors", {})[f"{key}_batch{n}"] = repr(exc)
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if args.profile:
        profile(engines["ours"], dev, max(args.batch))
    print(f"\n{args.model}, random weights, {res['image'][0]}x{res['image'][1]} images, {name} "
          f"({choice.device}, ours {choice.dtype}, {res['threads']} threads), torch "
          f"{torch.__version__}\n")
    print("| variant | batch | ms/image | images/s | peak GPU MiB | vs SamPredictor |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in args.batch:
        base = res["baseline"].get(f"set_image_x{n}")
        rows = [(f"SamPredictor.set_image x{n}, fp32", base),
                (f"Meta encoder module, batch {n}, fp32", res["baseline"].get(f"module_batch{n}"))]
        for key in engines:
            rows += [(f"{key}: set_images", res[key].get(f"batch{n}")),
                     (f"{key}: encoder forward only", res[key + "_forward"].get(f"batch{n}"))]
        for label, r in rows:
            if r is None:
                continue
            peak = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
            speed = f"{base['ms_per_image'] / r['ms_per_image']:.2f}x" if base else "-"
            print(f"| {label} | {n} | {r['ms_per_image']:.1f} | {r['images_per_s']:.2f} | "
                  f"{peak} | {speed} |")
    p = res["parity"]
    print(f"\nparity vs SamPredictor: embedding max |diff| {p['embedding_max_abs_diff']:.2e} "
          f"(max |embedding| {p['embedding_max_abs']:.2f}), mask IoU min "
          f"{p['mask_iou_min']:.4f} mean {p['mask_iou_mean']:.4f}; sync-free forward: "
          f"{res['sync_free_forward']}; engine load s: "
          f"{', '.join(f'{k} {v:.1f}' for k, v in res['load_s'].items())}; attention: "
          f"{res['attention_methods']}")
    write_json(args.json, res)


if __name__ == "__main__":
    main()

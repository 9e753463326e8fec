"""ONNX decoder latency on onnxruntime: Meta-style export vs ours, one click and five boxes.

    python benchmarks/onnx_decoder.py [--json results/onnx_decoder.json] [--reps 40]

A random-weight vit_b (segment_anything.sam_model_registry["vit_b"](), no download) and a random
image embedding: the decoder's speed does not depend on the weights' values. Image 768x1024
(H x W); every variant delivers full-resolution output: Meta's graph upsamples its 4 candidates
inside; ours return low-res logits and the runtime upsamples only the chosen candidate's window
(upsample_np), as OnnxEngine does. onnxruntime CPU, 2 intra-op threads, the runtime's session
options for every variant (sam_engine.onnx.runtime.session_options; --spin lets idle threads
busy-wait). Timings: p50 and p99 wall time over --reps calls, variants interleaved in a random
order per round so load from other processes hits all alike, and the p50 CPU time of the
process per call (less sensitive to such load). IoU columns compare the chosen full-size mask of
each prompt with the PyTorch SamEngine's; for the int8 graph, the candidate masks are also
compared on --quality random clicks and random five-box sets.
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
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segment_anything import sam_model_registry  # noqa: E402

from benchmarks.common import write_json  # noqa: E402
from sam_engine.onnx.export import ExportOptions, export_graphs, random_prompts  # noqa: E402
from sam_engine.onnx.runtime import (  # noqa: E402
    prompt_arrays,
    run_fast_decoder,
    session_options,
)
from sam_engine.prompts import Prompts, validate_prompts  # noqa: E402
from sam_engine.sam.backend import SamEngine  # noqa: E402
from sam_engine.upsample_np import NumpyMaskUpsampler  # noqa: E402

SIZE = (768, 1024)
CLICK = Prompts.from_points([[610.0, 380.0]])
BOXES = Prompts.from_boxes([[100, 100, 300, 260], [420, 90, 640, 300], [700, 120, 900, 330],
                            [120, 420, 380, 640], [560, 400, 1000, 720]])
META = "Meta-style export (fp32)"
CLICK_FP32 = "ours, one-prompt graph decoder_click (fp32)"
CLICK_INT8 = "ours, decoder_click int8 (transformer weights)"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=int, default=20,
                    help="random clicks and five-box sets for the int8 IoU figures")
    ap.add_argument("--spin", action="store_true", help="let idle onnxruntime threads spin")
    args = ap.parse_args()

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]().eval()
    emb = torch.randn(1, 256, 64, 64)
    e = emb.numpy()
    tmp = Path(tempfile.mkdtemp(prefix="onnx_bench_"))
    export_graphs(sam, tmp, ExportOptions(quantize=True))
    so = session_options(args.threads, spin=args.spin)

    def sess(name):
        return ort.InferenceSession(str(tmp / name), so, providers=["CPUExecutionProvider"])

    meta, terms_s = sess("decoder_meta.onnx"), sess("image_terms.onnx")
    fast, nomask = sess("decoder_fast.onnx"), sess("decoder_fast_nomask.onnx")
    click, click8 = sess("decoder_click.onnx"), sess("decoder_click.int8.onnx")
    terms = dict(zip([o.name for o in terms_s.get_outputs()],
                     terms_s.run(None, {"image_embeddings": e}), strict=True))
    engine = SamEngine(sam, "vit_b", device="cpu")
    handle = engine.handle_from_embedding(emb, SIZE)
    up = NumpyMaskUpsampler(handle.input_size, SIZE)

    def run_meta(p: Prompts) -> list[np.ndarray]:
        coords, labels = prompt_arrays(validate_prompts(p, SIZE), SIZE)
        out = []
        for b in range(coords.shape[0]):  # Meta's graph decodes one prompt per run
            full, iou_p, _ = meta.run(None, {
                "image_embeddings": e, "point_coords": coords[b:b + 1],
                "point_labels": labels[b:b + 1],
                "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(SIZE, np.float32)})
            out.append(full[0, 0] > 0)  # Meta's interface: one mask (return_single_mask)
        return out

    def run_ours(session, chunk=None):
        def run(p: Prompts) -> list[np.ndarray]:
            vp = validate_prompts(p, SIZE)
            low, iou_p = run_fast_decoder(session, terms, vp, SIZE, chunk)
            best = 1 + np.argmax(iou_p[:, 1:], axis=1)
            return [up(low[b, best[b]][None])[0] for b in range(low.shape[0])]
        return run

    variants = {
        META: run_meta,
        CLICK_FP32: run_ours(click),
        CLICK_INT8: run_ours(click8),
        "ours, batched graph, no mask-input path (fp32)": run_ours(nomask),
        "ours, batched graph with mask-input path (fp32)": run_ours(fast),
        "ours, batched graph, no mask path, one box per run (fp32)": run_ours(nomask, chunk=1),
    }
    rows = []
    rng = np.random.default_rng(0)
    for prompt_name, p in (("one click", CLICK), ("five boxes", BOXES)):
        ref = engine.predict(handle, p)
        ref_masks = [ref.best(b) for b in range(ref.shape[0])]
        names = [n for n in variants if not ("one box per run" in n and prompt_name == "one click")]
        ious = {}
        for n in names:  # warm-up, and the masks for the IoU column
            masks = variants[n](p)
            ious[n] = min(iou(a, b) for a, b in zip(masks, ref_masks, strict=True))
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(args.reps):  # interleaved, in a random order per round: load bursts from
            for n in rng.permutation(names):  # other processes hit every variant alike
                c0, t0 = time.process_time(), time.perf_counter()
                variants[n](p)
                times[n].append((time.perf_counter() - t0) * 1000)
                cpu[n].append((time.process_time() - c0) * 1000)
        for n in names:
            rows.append({"prompt": prompt_name, "variant": n,
                         "p50_ms": statistics.median(times[n]),
                         "p99_ms": float(np.percentile(times[n], 99)),
                         "cpu_p50_ms": statistics.median(cpu[n]), "reps": args.reps,
                         "min_iou_vs_torch": ious[n]})
    t0 = time.perf_counter()
    for _ in range(10):
        terms_s.run(None, {"image_embeddings": e})
    terms_ms = (time.perf_counter() - t0) * 100
    quality = int8_quality(engine, handle, click8, terms, up, args.quality)
    res = {
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "spin": args.spin, "onnxruntime": ort.__version__, "torch": torch.__version__,
        "image": list(SIZE), "image_terms_once_per_image_ms": terms_ms, "rows": rows,
        "int8_quality": quality,
    }
    print(f"\nONNX decoder, vit_b, {SIZE[0]}x{SIZE[1]}, onnxruntime {ort.__version__} CPU, "
          f"{args.threads} threads{', spinning' if args.spin else ''}, {args.reps} reps\n")
    print("| prompt | variant | p50 ms | p99 ms | CPU p50 ms | vs Meta p50 | min IoU vs PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    base = {r["prompt"]: r["p50_ms"] for r in rows if r["variant"] == META}
    for r in rows:
        print(f"| {r['prompt']} | {r['variant']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['cpu_p50_ms']:.1f} | {r['p50_ms'] / base[r['prompt']]:.2f}x | "
              f"{r['min_iou_vs_torch']:.4f} |")
    print(f"\nimage terms (once per image): {terms_ms:.1f} ms")
    for k, v in quality.items():
        print(f"int8 decoder_click vs PyTorch, {k}: candidate mask IoU mean {v['mean_iou']:.4f}, "
              f"min {v['min_iou']:.4f} over {v['masks']} masks; same best candidate "
              f"{100 * v['same_best_candidate']:.0f} %")
    write_json(args.json, res)


def int8_quality(engine: SamEngine, handle, session, terms, up, n: int) -> dict:
    """The int8 click graph vs PyTorch on n random clicks and n random five-box sets: IoU of
    each of the 3 multimask candidates with PyTorch's same candidate (mean, min), and how often
    both pick the same best candidate (with random weights the IoU predictions of the
    candidates are close, so a small error can swap the choice)."""
    rng = np.random.default_rng(1)
    out = {}
    for kind in ("clicks", "five boxes"):
        ious, same = [], []
        for _ in range(n):
            if kind == "clicks":
                p = random_prompts(rng, SIZE, 1)[0]
            else:
                b = rng.uniform(0, 0.6, size=(5, 2)) * (SIZE[1], SIZE[0])
                wh = rng.uniform(0.05, 0.35, size=(5, 2)) * (SIZE[1], SIZE[0])
                p = Prompts.from_boxes(np.concatenate([b, b + wh], 1))
            ref = engine.predict(handle, p)
            low, iou_p = run_fast_decoder(session, terms, validate_prompts(p, SIZE), SIZE)
            for i in range(low.shape[0]):
                ious += [iou(up(low[i, 1 + c][None])[0], ref.mask(i, c)) for c in range(3)]
                same.append(int(np.argmax(iou_p[i, 1:])) == ref.best_index(i))
        out[kind] = {"mean_iou": float(np.mean(ious)), "min_iou": float(min(ious)),
                     "masks": len(ious), "same_best_candidate": float(np.mean(same))}
    return out


if __name__ == "__main__":
    main()

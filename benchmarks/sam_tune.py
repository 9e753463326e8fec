"""Seconds per training step of SAM tuning (sam_engine.learned.sam_tune), per model and mode.

    python benchmarks/sam_tune.py --json benchmarks/results/sam_tune_cpu.json
    python benchmarks/sam_tune.py --models vit_b --modes lora --steps 3 --device cuda

Random weights (speed does not depend on their values): "tiny" is tests/sam_factory.tiny_sam
(2-block ViT of width 64, Meta's full-size prompt decoder), vit_b/vit_l/vit_h are Meta's
architectures. Modes: "decoder" (mask decoder on cached embeddings) and "lora" (rank-8 adapters
on the encoder's qkv plus the decoder; the encoder runs forward and backward each step). One
step = `--images` image(s) x up to 4 instances each, a corrective second round on half of
the images (the defaults' recipe). Reported: the median step time after the first (warm-up)
step, the encoder time per image for caching embeddings (decoder mode), trainable / total
parameters. Images are synthetic parts (sam_engine.synthetic) of 480 x 640 px.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import random_sam, write_json  # noqa: E402
from sam_engine.learned.data import Instance, make_image  # noqa: E402
from sam_engine.learned.sam_tune import SamTuneSettings, tune_sam_decoder  # noqa: E402
from sam_engine.synthetic.generator import make_part  # noqa: E402


def build(model: str) -> torch.nn.Module:
    if model == "tiny":
        from tests.sam_factory import tiny_sam

        return tiny_sam()
    return random_sam(model)


def images(n: int) -> list:
    out = []
    for i in range(n):
        part = make_part(seed=11 + i, size=(480, 640), n_defects=4)
        out.append(make_image(part.image, [Instance(d.kind, d.mask) for d in part.instances]))
    return out


def measure(model: str, mode: str, steps: int, n_images: int, device: str) -> dict:
    sam = build(model)
    train = images(max(2, n_images))
    stamps: list[float] = []
    settings = SamTuneSettings(steps=steps, images_per_step=n_images, instances_per_image=4,
                               p_corrective=0.5, lora=mode == "lora", lora_rank=8,
                               checkpoint_every=0, device=device)
    t0 = time.perf_counter()
    r = tune_sam_decoder(sam, train, [], settings, checkpoint_path=None, progress=False,
                         on_step=lambda step, loss: stamps.append(time.perf_counter()))
    loop_start = stamps[-1] - r.seconds_per_step * steps  # the loop's own clock, end ~ last
    step_times = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    first = stamps[0] - loop_start
    prep = loop_start - t0  # checks, targets, and (decoder mode) the embeddings
    return {
        "model": model,
        "mode": mode,
        "images_per_step": n_images,
        "steps": steps,
        "s_per_step_median": statistics.median(step_times) if step_times else r.seconds_per_step,
        "s_per_step_all": [round(t, 3) for t in step_times],
        "first_step_s": round(first, 3),
        "embedding_s_per_image": round(prep / len(train), 3) if mode == "decoder" else None,
        "trainable_params": r.params.trainable,
        "total_params": r.params.total,
        "adapter_params": r.params.adapter,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "vit_b"])
    ap.add_argument("--modes", nargs="+", default=["decoder", "lora"],
                    choices=["decoder", "lora"])
    ap.add_argument("--steps", type=int, default=4, help="steps per run (first is warm-up)")
    ap.add_argument("--lora-steps", type=int, default=None,
                    help="steps per LoRA run on vit_b/l/h (default: --steps)")
    ap.add_argument("--images", type=int, default=1, help="images per step")
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                    help="torch CPU thread counts to measure with")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    runs = []
    for model in args.models:
        for mode in args.modes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                load = os.getloadavg()[0]
                big_lora = mode == "lora" and model != "tiny" and args.lora_steps
                steps = args.lora_steps if big_lora else args.steps
                fig = measure(model, mode, steps, args.images, args.device)
                fig.update(threads=threads, load_average_before=round(load, 2))
                runs.append(fig)
                print(f"{model:6s} {mode:8s} threads={threads}: "
                      f"{fig['s_per_step_median']:.3f} s/step (steps {fig['s_per_step_all']}), "
                      f"trainable {fig['trainable_params']:,} of {fig['total_params']:,}",
                      flush=True)
    write_json(args.json, {
        "benchmark": "sam_tune",
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "note": "random weights; one step = images_per_step images x up to 4 instances, "
                "corrective round on half; the CPU is shared with other jobs "
                "(load_average_before), so figures are upper bounds",
        "runs": runs,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

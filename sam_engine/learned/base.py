"""Train the learned engine's base model on synthetic parts only (one command, reproducible).

    python -m sam_engine.learned.base --out models/learned-base

draws `--parts` parts from the project's generator (sam_engine.synthetic, hard mode: thin
low-contrast cracks on rough texture, defects that fill their box, diffuse regions, blob
clusters, many textures and lights), trains the crop network on their instances with
simulated prompts, measures it on parts it never saw, and writes the model folder (weights +
manifest with the settings, the seeds, the command and the held-out figures, the classic
engine's beside them). No real image is used. The defaults are those of the committed base
(475 s on this project's 2-core CPU); the same torch version and thread count give the same
weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam_engine.learned.data import Instance, TrainImage, make_image

log = logging.getLogger(__name__)


def synthetic_images(n: int, seed: int) -> list[TrainImage]:
    """n synthetic parts as TrainImages (hard generator), deterministic for the seed."""
    from sam_engine.synthetic.hard import training_part

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = int(rng.integers(2**31))
        part = training_part(s, hard=True)
        inst = [Instance(d.kind, d.mask) for d in part.instances if np.count_nonzero(d.mask)]
        if inst:
            out.append(make_image(part.image, inst, source=f"synthetic:{s}"))
        if i and i % 200 == 0:
            log.info("generated %d/%d parts", i, n)
    return out


def sample_style_images(n: int, seed: int) -> list[TrainImage]:
    """n parts like the bundled samples (the classic generator, 480 x 640), for the
    comparison with the classic engine that `--engine auto` reads."""
    from sam_engine.synthetic.generator import make_part

    out = []
    for i in range(n):
        part = make_part(seed + i, size=(480, 640))
        inst = [Instance(d.kind, d.mask) for d in part.instances if np.count_nonzero(d.mask)]
        if inst:
            out.append(make_image(part.image, inst, source=f"synthetic-classic:{seed + i}"))
    return out


def compare_with_classic(model, manifest, n_hard: int = 120, n_parts: int = 60,
                         seed: int = 1) -> dict:
    """The held-out figures `--engine auto` weighs: the model and the classic engine on n_hard
    hard parts never trained on (drawn with `seed`, not the training seed) and on n_parts
    sample-style parts (seeds 10000...)."""
    from sam_engine.classic import ClassicEngine
    from sam_engine.learned.engine import LearnedEngine
    from sam_engine.learned.heldout import evaluate

    out = {}
    for key, images in (("synthetic_test", synthetic_images(n_hard, seed)),
                        ("parts_test", sample_style_images(n_parts, 10000))):
        mine = evaluate(LearnedEngine(model, manifest), images, progress=True, desc=key)
        theirs = evaluate(ClassicEngine(), images, progress=True, desc=f"classic {key}")
        out[key], out[f"classic_{key}"] = mine.table(), theirs.table()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from sam_engine.learned.model import CropUNet, NetConfig
    from sam_engine.learned.registry import BASE_NAME
    from sam_engine.learned.train import TrainSettings, train
    from sam_engine.learned.weights import BASE_DIR, ModelManifest, save_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=BASE_DIR)
    ap.add_argument("--parts", type=int, default=1500)
    ap.add_argument("--test-parts", type=int, default=120)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--checkpoint", type=Path, help="resume file (default: OUT/train.ckpt)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    images = synthetic_images(args.parts, args.seed)
    log.info("%d training parts in %.0f s", len(images), time.perf_counter() - t0)
    torch.manual_seed(args.seed)
    model = CropUNet(NetConfig())
    settings = TrainSettings(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                             iou_weight=1.0)
    ck = args.checkpoint or (args.out / "train.ckpt")
    report = train(model, images, settings, checkpoint=ck, data_digest=f"synthetic:{args.seed}")
    manifest = ModelManifest(name=BASE_NAME, version="1", net=model.config.to_dict(),
                             data={"source": "sam_engine.synthetic (hard mode) only",
                                   "parts": args.parts, "seed": args.seed,
                                   "command": "python -m sam_engine.learned.base " + " ".join(
                                       sys.argv[1:] if argv is None else argv),
                                   "instances": sum(len(i.instances) for i in images)},
                             settings=settings.to_dict(),
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    figures = compare_with_classic(model, manifest, args.test_parts, args.test_parts // 2,
                                   args.seed + 1)
    manifest.metrics = {**figures, "train_seconds": round(report.seconds), "steps": report.steps}
    save_model(args.out, model.state_dict(), manifest)
    ck.unlink(missing_ok=True)
    for key in ("synthetic_test", "parts_test"):
        mine, theirs = figures[key]["all"], figures[f"classic_{key}"]["all"]
        print(f"{key}: box {mine['box']:.3f}, click {mine['point']:.3f} on {mine['n']} "
              f"instances (classic {theirs['box']:.3f} / {theirs['point']:.3f}, box-fill "
              f"{mine['box_fill']:.3f})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

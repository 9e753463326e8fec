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


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from sam_engine.classic import ClassicEngine
    from sam_engine.learned.engine import LearnedEngine
    from sam_engine.learned.heldout import evaluate
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
    test = synthetic_images(args.test_parts, args.seed + 1)
    log.info("%d training parts, %d test parts in %.0f s", len(images), len(test),
             time.perf_counter() - t0)
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
    h = evaluate(LearnedEngine(model, manifest), test, progress=True, desc="synthetic test")
    classic = evaluate(ClassicEngine(), test, progress=True, desc="classic, same parts")
    manifest.metrics = {"synthetic_test": h.table(), "classic_synthetic_test": classic.table(),
                        "train_seconds": round(report.seconds), "steps": report.steps}
    save_model(args.out, model.state_dict(), manifest)
    ck.unlink(missing_ok=True)
    print(f"wrote {args.out}: box {h.mean('box'):.3f}, click {h.mean('point'):.3f} on "
          f"{len(h.classes)} synthetic test instances (classic {classic.mean('box'):.3f} / "
          f"{classic.mean('point'):.3f}, box-fill {h.box_fill_mean():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

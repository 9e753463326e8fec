"""Zero-click finding taught by examples (fewshot) and by good parts (golden samples).

Site protocol, as benchmarks/tune.py: each real dataset under ../shared/data/defects
(neu_seg, crackforest) is one site, its images split 50/50 by group hash (learned.data.split,
salted with the site's name). From the first half, 1, 5 and 20 accepted examples (instances)
per class are drawn (seeded; 3 draws, their counts summed) and taught; the second half is
searched without prompts and measured with finder.metrics.Tally: per class, defect recall and
precision at mask IoU >= 0.5 and pixel IoU. Each taught model also searches clean synthetic parts
(synthetic.hard.make_hard_part, n_defects=0, random surfaces): the share with any find is its
false-alarm rate.

Golden samples: per surface texture, a model is fitted on N clean synthetic parts of that
texture (grey, each with its own lighting and camera), then measured on held-out clean parts
of it (false alarms) and on parts of it with defects (recall at IoU >= 0.5, and the share of
defects that any find overlaps).

    python benchmarks/teach.py --json benchmarks/results/teach.json

The research-only data is read in place, never copied, and nothing taught on it is kept.
Constants were chosen on synthetic parts only; the real sites are for measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sam_engine.finder.anomaly import fit_golden  # noqa: E402
from sam_engine.finder.fewshot import Example, teach  # noqa: E402
from sam_engine.finder.metrics import Tally, Truth, truth_from_instances  # noqa: E402
from sam_engine.finder.types import UNKNOWN_CLASS  # noqa: E402
from sam_engine.learned.data import read_folder, split  # noqa: E402
from sam_engine.learned.weights import write_atomic  # noqa: E402
from sam_engine.synthetic.hard import make_hard_part  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"
SITES = ("neu_seg", "crackforest")
GOLDEN_TEXTURES = ("rolled", "brushed", "concrete", "smooth")


def draw_examples(train, cls: str, k: int, rng: np.random.Generator) -> list[Example]:
    """k instances of cls from the training half; other instances of cls on the same image are
    neither example nor background (an inspector accepted only these)."""
    pool = [(im, inst) for im in train for inst in im.instances if inst.cls == cls]
    picks = rng.choice(len(pool), min(k, len(pool)), replace=False)
    out = []
    for i in sorted(picks):
        im, inst = pool[i]
        others = [o.mask for o in im.instances if o is not inst and o.cls == cls]
        out.append(Example(im.rgb, inst.mask, cls,
                           np.logical_or.reduce(others) if others else None))
    return out


def clean_parts(n: int, seed: int = 7000) -> list[np.ndarray]:
    return [make_hard_part(seed + i, n_defects=0).image for i in range(n)]


def site(name: str, args, cleans: list[np.ndarray]) -> dict:
    data = read_folder(args.data, dataset=name)
    train, held = split(data.images, 0.5, salt=name)
    if args.max_held:
        held = held[:: max(1, len(held) // args.max_held)][: args.max_held]
    classes = data.classes()
    out = {"images": {"train": len(train), "held_out": len(held)}, "classes": classes,
           "shots": {}}
    for k in args.shots:
        tally, fa = Tally(), Tally()  # summed over the draws: one micro-average per figure
        t_teach = t_find = 0.0
        counts = []
        for draw in range(args.draws):
            rng = np.random.default_rng([args.seed, k, draw])
            examples = [e for c in classes for e in draw_examples(train, c, k, rng)]
            t0 = time.perf_counter()
            model = teach(examples)
            t_teach += time.perf_counter() - t0
            counts.append(dict(model.n_examples))
            t0 = time.perf_counter()
            for im in held:
                tally.add(model.find(im.rgb), truth_from_instances(im.instances, im.size),
                          classes)
            t_find += time.perf_counter() - t0
            for rgb in cleans:
                fa.add(model.find(rgb), Truth({}, rgb.shape[:2]), classes)
        s = tally.summary()
        t_find /= max(len(held) * args.draws, 1)
        t_teach /= args.draws
        out["shots"][str(k)] = {
            "draws": args.draws, "examples": counts, "per_class": s["per_class"],
            "class_accuracy": s["class_accuracy"],
            "synthetic_clean_false_alarm_rate": fa.false_alarm_rate,
            "teach_seconds": round(t_teach, 2), "find_ms_per_image": round(t_find * 1e3, 1)}
        print(f"  {name} {k:>2} shots x {args.draws} draws: taught in {t_teach:.1f}s, "
              f"{t_find * 1e3:.0f} ms/image", flush=True)
    return out


def golden(texture: str, args) -> dict:
    size = (192, 256)

    def part(seed: int, n: int):
        return make_hard_part(seed, size=size, n_defects=n, texture=texture, colour=False)

    t0 = time.perf_counter()
    model = fit_golden([part(3000 + i, 0).image for i in range(args.golden_good)])
    t_fit = time.perf_counter() - t0
    clean = Tally()
    for i in range(args.golden_test):
        clean.add(model.find(part(4000 + i, 0).image), Truth({}, size), [UNKNOWN_CLASS])
    bad, hits, n = Tally(), 0, 0
    t0 = time.perf_counter()
    for i in range(args.golden_test):
        p = part(5000 + i, 2)
        found = model.find(p.image)
        union = np.logical_or.reduce([d.mask for d in p.instances]) if p.instances \
            else np.zeros(size, bool)
        bad.add(found, Truth({UNKNOWN_CLASS: union}, size), [UNKNOWN_CLASS])
        for d in p.instances:
            n += 1
            hits += any((f.mask & d.mask).any() for f in found)
    t_find = (time.perf_counter() - t0) / max(args.golden_test, 1)
    s = bad.summary()["per_class"][UNKNOWN_CLASS]
    return {"good_parts": args.golden_good, "false_alarm_rate": clean.false_alarm_rate,
            "recall": s["recall"], "precision": s["precision"], "pixel_iou": s["pixel_iou"],
            "overlap_hit_rate": round(hits / n, 4) if n else None, "defects": n,
            "threshold": round(model.threshold, 4), "fit_seconds": round(t_fit, 2),
            "find_ms_per_image": round(t_find * 1e3, 1)}


def _f(v) -> str:
    return "     -" if v is None else f"{v:6.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--shots", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 5, 20], help="examples per class (default 1,5,20)")
    p.add_argument("--draws", type=int, default=3,
                   help="seeded draws of the examples per number of shots (default 3)")
    p.add_argument("--max-held", type=int, default=0,
                   help="at most this many held-out images per site (default all)")
    p.add_argument("--clean", type=int, default=20, help="clean synthetic parts (default 20)")
    p.add_argument("--golden-good", type=int, default=10)
    p.add_argument("--golden-test", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t_all = time.perf_counter()
    figures: dict = {"command": " ".join(["python", "benchmarks/teach.py", *(argv or
                                                                          sys.argv[1:])]),
                     "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                 "omp_threads": os.environ.get("OMP_NUM_THREADS")},
                     "sites": {}, "golden": {}}
    cleans = clean_parts(args.clean)
    if (args.data / "manifest.csv").is_file():
        for name in SITES:
            figures["sites"][name] = site(name, args, cleans)
    else:
        print(f"{args.data} is not present: the real sites are skipped")
    for texture in GOLDEN_TEXTURES:
        figures["golden"][texture] = golden(texture, args)
        print(f"  golden {texture}: fitted in {figures['golden'][texture]['fit_seconds']}s",
              flush=True)
    figures["seconds"] = round(time.perf_counter() - t_all, 1)

    print(f"\n{'site':<12}{'class':<11}{'shots':>5}{'recall':>8}{'prec':>7}{'pxIoU':>7}"
          f"{'true':>6}{'found':>6}  synthetic clean FA")
    for name, s in figures["sites"].items():
        for k, r in s["shots"].items():
            for cls, c in r["per_class"].items():
                print(f"{name:<12}{cls:<11}{k:>5} {_f(c['recall'])} {_f(c['precision'])}"
                      f"{_f(c['pixel_iou'])}{c['true_defects']:>6}{c['found_defects']:>6}  "
                      f"{_f(r['synthetic_clean_false_alarm_rate'])}")
    print(f"\n{'golden':<12}{'FA clean':>9}{'recall':>8}{'prec':>7}{'pxIoU':>7}{'overlap':>8}")
    for tex, g in figures["golden"].items():
        print(f"{tex:<12}{_f(g['false_alarm_rate']):>9} {_f(g['recall'])} {_f(g['precision'])}"
              f"{_f(g['pixel_iou'])} {_f(g['overlap_hit_rate'])}")
    print(f"total {figures['seconds']} s")
    if args.json:
        write_atomic(args.json, (json.dumps(figures, indent=2) + "\n").encode())
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Zero-click inspection on the site protocol: the finder trained by `sam-inspect tune --finder`.

Each real dataset under ../shared/data/defects (neu_seg, crackforest) is one site, split 50/50
by group hash exactly as benchmarks/tune.py splits it (salt = the site's name). A finder is
trained on the first half (and on synthetic clean parts), and measured on the second half:
per class, pixel IoU of the found defects and defect-level recall / precision at mask IoU >=
0.5 (ground truth and found masks grouped alike: components within 2% of the image's long side
are one defect, which joins NEU-Seg's fragmented masks); image-level class accuracy (the class
with the most found area against the image's true class); part-level PASS/FAIL agreement under
a sample recipe (benchmarks/recipes/, the truth judged from the ground-truth defects measured
the same way); and the false-alarm rate on 50 synthetic clean parts never trained on.

    python benchmarks/find.py --json benchmarks/results/find_sites.json

Run on a quiet machine, one job at a time. The research-only data is read in place; the
finders trained on it live in a temporary registry and are not kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_json  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"
RECIPES = Path(__file__).resolve().parent / "recipes"
RECIPE_OF = {"neu_seg": "neu_steel.toml", "crackforest": "crackforest.toml"}


def verdict_agreement(finder, held, clean, recipe) -> dict:
    """Share of parts whose verdict from found defects equals the verdict from the truth."""
    from app.finding.plan import FindPlan, find_defects, to_findings
    from app.inspection.findings import Finding
    from app.inspection.measure import Calibration, measure
    from app.inspection.verdict import judge
    from sam_engine.finder.preprocess import group_components, radius_px

    wanted = tuple(c for c in recipe.class_names if c in finder.classes)
    plan = FindPlan(wanted, finder, by_finder=wanted)
    cal = Calibration(None)
    agree = total = fails_true = 0
    for rgb, instances in [(im.rgb, im.instances) for im in held] + [(c, ()) for c in clean]:
        size = rgb.shape[:2]
        truth = []
        for cls in wanted:
            m = np.zeros(size, bool)
            for inst in instances:
                if inst.cls == cls:
                    m |= inst.mask
            for g in group_components(m, radius_px(size, 0.02)) if m.any() else []:
                truth.append(Finding(cls, g, measure(g, cal)))
        found = to_findings(find_defects(plan, rgb), recipe, calibration=cal)
        t, f = judge(truth, recipe), judge(found, recipe)
        agree += t.status == f.status
        fails_true += not t.passed
        total += 1
    return {"parts": total, "agreement": round(agree / total, 4),
            "truth_fail_share": round(fails_true / total, 4)}


def site(name: str, args) -> dict:
    from app.inspection.recipe import load_recipe
    from app.tuning.finder_run import (
        CLEAN_TEST_SEEDS,
        FinderTuneRequest,
        synthetic_clean,
        tune_finder,
    )
    from sam_engine.finder.finder import load_finder
    from sam_engine.learned.data import read_folder, split

    data = read_folder(DATA, dataset=name)
    train_set, held = split(data.images, 0.5, salt=name)
    req = FinderTuneRequest(data=data, name=f"bench-{name}", recipe=name, held_out=0.5,
                            salt=name, steps=args.steps)
    out = tune_finder(req, progress=True)
    finder = load_finder(out.folder)
    recipe = load_recipe(RECIPES / RECIPE_OF[name])
    clean = synthetic_clean(CLEAN_TEST_SEEDS)
    agreement = verdict_agreement(finder, held, clean, recipe)
    t = []
    for im in held[:40]:
        t0 = time.perf_counter()
        finder.find(im.rgb)
        t.append((time.perf_counter() - t0) * 1e3)
    return {
        "images": {"train": len(train_set), "held_out": len(held), "clean": len(clean)},
        "defects_train": sum(len(i.instances) for i in train_set),
        "held_out": out.after, "pass_fail": agreement | {"recipe": RECIPE_OF[name]},
        "geometry": out.manifest.net["geometry"], "widths": out.manifest.net["widths"],
        "train_seconds": round(out.train_seconds, 1), "steps": out.manifest.settings["steps"],
        "find_ms_p50_torch": round(float(np.median(t)), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", nargs="*", default=["neu_seg", "crackforest"])
    ap.add_argument("--steps", type=int, default=None, help="default: tune --finder's")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"{DATA} is absent: the site protocol needs the research data", file=sys.stderr)
        return 2
    figures = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
               "command": "python benchmarks/find.py " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory() as reg:
        os.environ["SAM_INSPECT_TUNED"] = reg  # finders trained on research data are not kept
        for name in args.sites:
            figures[name] = site(name, args)
            r = figures[name]
            print(name, r["held_out"]["per_class"], "class acc", r["held_out"]["class_accuracy"],
                  "false alarms", r["held_out"]["false_alarm_rate"], "PASS/FAIL",
                  r["pass_fail"])
            write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

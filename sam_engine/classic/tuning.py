"""Synthetic tuning / validation sets for the classic engine, and their per-kind IoU table.

    python -m sam_engine.classic.tuning --set tune --prompt box,point
    python -m sam_engine.classic.tuning --set val --prompt box,point
    python -m sam_engine.classic.tuning --set tune --prompt point --param EXTRA_OCTAVES=2

A set is parts from sam_engine.synthetic.generator.make_part at three sizes (200x200, 320x480,
480x640),
materials alternating, with disjoint seed ranges: "tune" (seeds 1000 + 1000 * size_index + i,
100 parts per size) for choosing constants, "val" (seeds 5000 + ..., 40 per size) for checking
them. Each instance of >= 20 px is prompted with its tight box and with one click at its most
interior pixel (as `sam-inspect eval` does), and the best mask is scored by IoU; the box-fill
baseline and the best of the three candidates (@3) are printed beside. --param NAME=VALUE
overrides a constant of sam_engine.classic.params for the run (sweeps).
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np

from sam_engine.classic import params
from sam_engine.prompts import Prompts
from sam_engine.synthetic import generator as synthetic

SIZES: tuple[tuple[int, int], ...] = ((200, 200), (320, 480), (480, 640))
SETS: dict[str, tuple[int, int]] = {"tune": (1000, 100), "val": (5000, 40)}  # seed base, per size
MIN_AREA = 20


@dataclass(frozen=True)
class InstanceScore:
    """IoUs of one synthetic instance: best mask and best-of-three per prompt kind."""

    kind: str
    size: tuple[int, int]
    box_fill: float
    best: dict[str, float]
    best_of_3: dict[str, float]


def part_specs(name: str, per_size: int | None = None) -> list[tuple[int, tuple[int, int], str]]:
    """(seed, size, material) of every part of set `name`."""
    base, n = SETS[name]
    n = n if per_size is None else per_size
    return [(base + 1000 * si + i, size, synthetic.MATERIALS[i % 2])
            for si, size in enumerate(SIZES) for i in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 1.0


def score_part(spec: tuple[int, tuple[int, int], str], prompts: Sequence[str],
               overrides: dict[str, object] | None = None) -> list[InstanceScore]:
    """Render one part and score every instance of it."""
    from sam_engine.classic.engine import ClassicEngine

    for k, v in (overrides or {}).items():
        _override(k, v)
    seed, size, material = spec
    part = synthetic.make_part(seed, size, material)
    engine = ClassicEngine()
    handle = engine.set_image(part.image)
    out = []
    for inst in part.instances:
        if inst.area < MIN_AREA:
            continue
        x0, y0, x1, y1 = inst.bbox
        fill = np.zeros_like(inst.mask)
        fill[y0:y1, x0:x1] = True
        px, py = inst.point
        ask = {"box": Prompts.from_boxes([[x0, y0, x1, y1]]),
               "point": Prompts.from_points([[px + 0.5, py + 0.5]], [1])}
        best, best3 = {}, {}
        for kind in prompts:
            res = engine.predict(handle, ask[kind])
            ious = [_iou(res.mask(0, c), inst.mask) for c in range(res.shape[1])]
            best[kind], best3[kind] = _iou(res.best(0), inst.mask), max(ious)
        out.append(InstanceScore(inst.kind, size, _iou(fill, inst.mask), best, best3))
    return out


def _override(name: str, value: object) -> None:
    """Set a params constant in every module that imported it by name."""
    from sam_engine.classic import box_segment, point_segment

    for mod in (params, box_segment, point_segment):
        if hasattr(mod, name):
            setattr(mod, name, value)


def _job(args):
    return score_part(*args)


def evaluate_set(name: str, prompts: Sequence[str], per_size: int | None = None,
                 overrides: dict[str, object] | None = None, workers: int = 2,
                 ) -> list[InstanceScore]:
    """Scores of every instance of set `name` (parts spread over `workers` processes)."""
    bad = [k for k in (overrides or {}) if not hasattr(params, k)]
    if bad:  # checked here: a worker that raised would leave the pool waiting
        raise ValueError(f"sam_engine.classic.params has no constant(s) {', '.join(bad)}")
    jobs = [(spec, tuple(prompts), overrides) for spec in part_specs(name, per_size)]
    if workers <= 1:
        return [s for j in jobs for s in _job(j)]
    with get_context("spawn").Pool(workers) as pool:
        return [s for part in pool.map(_job, jobs, chunksize=4) for s in part]


def format_table(scores: list[InstanceScore], prompts: Sequence[str]) -> str:
    """Per-kind mean IoU: n, box fill, then per prompt kind its best mask and best of three."""
    head = f"{'kind':<10}{'n':>5}{'fill':>8}" + "".join(f"{p:>8}{p[:3] + '@3':>8}"
                                                         for p in prompts)
    lines = [head]
    for kind in sorted({s.kind for s in scores}) + ["all"]:
        sub = [s for s in scores if kind in ("all", s.kind)]
        line = f"{kind:<10}{len(sub):>5}{np.mean([s.box_fill for s in sub]):>8.4f}"
        for p in prompts:
            line += (f"{np.mean([s.best[p] for s in sub]):>8.4f}"
                     f"{np.mean([s.best_of_3[p] for s in sub]):>8.4f}")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sam_engine.classic.tuning",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="val", dest="name")
    ap.add_argument("--prompt", default="box,point", help="comma-separated: box, point")
    ap.add_argument("--per-size", type=int, help="parts per size (default: the set's own)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a sam_engine.classic.params constant (Python literal)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    prompts = [p for p in args.prompt.split(",") if p]
    if not prompts or any(p not in ("box", "point") for p in prompts):
        ap.error(f"--prompt takes box and/or point; got {args.prompt!r}")
    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            ap.error(f"--param {item!r}: VALUE must be a Python literal")
    try:
        scores = evaluate_set(args.name, prompts, args.per_size, overrides, args.workers)
    except ValueError as exc:
        ap.error(str(exc))
    print(format_table(scores, prompts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

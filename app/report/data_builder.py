"""Training pairs (findings -> report) in the style of Self-Instruct.

Start from seed pairs written by people (a JSONL of {"inspection": Inspection dict, "report":
text, "style": ...}; numbers in their text are turned into slots) or, without seeds, from the
template. Grow the pool: new findings are made by varying a seed inspection (measurements,
classes, number of defects; the verdict is judged again with the recipe, so it stays true), each
gets a paraphrased report (the template's alternative wordings, or a language model's text that
passes the fact check). Candidates whose filled text has ROUGE-L >= 0.7 with a kept report of
the same style are dropped, and defect classes are balanced by always growing the class seen
least so far.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.inspection.findings import Finding, Inspection
from app.inspection.measure import Measurements
from app.inspection.recipe import Recipe, load_recipe
from app.inspection.verdict import judge
from app.outputs import atomic_write
from app.report.facts import ReportFacts, check_text, facts_from_inspection, fill_slots, slotify
from app.report.rouge import NearDuplicateFilter
from app.report.template import LANG, narrative

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"

# Typical sizes per class in mm: (length range, width as a share of length range)
_SIZES = {
    "scratch": ((0.5, 4.5), (0.02, 0.15)),
    "crack": ((0.5, 6.0), (0.01, 0.05)),
    "pit": ((0.1, 1.0), (0.7, 1.0)),
    "inclusion": ((0.1, 0.8), (0.6, 1.0)),
    "stain": ((0.5, 3.0), (0.5, 1.0)),
    "patch": ((1.0, 5.0), (0.4, 1.0)),
}
_OPERATORS = ("A. Novak", "J. Müller", "M. Rossi", "S. Okafor", "L. Wang", "Zoë Brandt",
              "K. Jørgensen", "R. Silva")


@dataclass
class BuildStats:
    candidates: int = 0
    kept: int = 0
    near_duplicates: int = 0
    failed_check: int = 0
    classes: Counter = field(default_factory=Counter)
    styles: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        cls = ", ".join(f"{k} {v}" for k, v in sorted(self.classes.items()))
        return (f"{self.kept} pairs kept of {self.candidates} candidates "
                f"({self.near_duplicates} near-duplicates, {self.failed_check} failed the fact "
                f"check); defects per class: {cls}")


def _defect(rng: random.Random, cls: str, mm_per_px: float, size=(640, 480)) -> Finding:
    (lo, hi), (wlo, whi) = _SIZES.get(cls, ((0.2, 3.0), (0.3, 1.0)))
    length = rng.uniform(lo, hi)
    width = max(length * rng.uniform(wlo, whi), mm_per_px)
    area = length * width * (0.785 if cls in ("pit", "inclusion", "stain", "patch") else 0.8)
    lp, wp = length / mm_per_px, width / mm_per_px
    x0 = rng.randint(0, max(0, int(size[0] - lp - 1)))
    y0 = rng.randint(0, max(0, int(size[1] - wp - 1)))
    x1, y1 = x0 + max(1, int(round(lp))), y0 + max(1, int(round(wp)))
    cy = (y0 + y1) / 2
    m = Measurements(
        area_px=max(1, int(round(area / mm_per_px**2))),
        bbox=(x0, y0, x1, y1),
        centroid=((x0 + x1) / 2, cy),
        feret_max_px=lp,
        min_width_px=wp,
        thickness_px=wp,
        perimeter_px=2 * (lp + wp),
        n_parts=1,
        datum_distance_px=size[1] - 1 - cy,
        mm_per_px=mm_per_px,
    )
    return Finding(cls, None, m, round(rng.uniform(0.55, 0.99), 3), source="sam")


def random_inspection(rng: random.Random, recipe: Recipe, classes: Iterable[str] = (),
                      n_extra: int | None = None) -> Inspection:
    """A plausible inspection of a part: the given classes plus n_extra random defects, judged
    against the recipe."""
    mm_per_px = recipe.calibration.mm_per_px or 0.05
    names = list(recipe.class_names)
    if n_extra is None:
        n_extra = rng.choices((0, 1, 2, 3), weights=(4, 4, 2, 1))[0]
    wanted = list(classes) + [rng.choice(names) for _ in range(n_extra)]
    findings = [_defect(rng, c, mm_per_px) for c in wanted]
    t0 = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
    return Inspection(
        image_path=f"images/part_{rng.randint(1, 9999):04d}.png",
        image_sha256=f"{rng.getrandbits(256):064x}",
        part_id=rng.choice(("P", "HX", "BR", "VK")) + f"-{rng.randint(100, 9999)}",
        serial=f"SN{rng.randint(100000, 999999)}",
        lot=f"L{rng.randint(24, 26)}{rng.randint(1, 52):02d}-{rng.randint(1, 9)}",
        station=f"ST-{rng.randint(1, 12)}",
        operator=rng.choice(_OPERATORS),
        time=t0 + timedelta(minutes=rng.randint(0, 60 * 24 * 300)),
        engine="sam",
        model_id=rng.choice(("vit_b", "vit_h", "vit_t")),
        recipe_name=recipe.name,
        recipe_version=recipe.version,
        findings=findings,
        verdict=judge(findings, recipe),
    )


def vary(rng: random.Random, seed: Inspection, recipe: Recipe, lacking: str) -> Inspection:
    """A new inspection in the spirit of a seed: its classes, one of them possibly swapped for
    the class seen least so far (lacking), a defect added or dropped, new sizes; judged again."""
    classes = [f.defect_class for f in seed.findings]
    r = rng.random()
    if classes and r < 0.4:
        classes[rng.randrange(len(classes))] = lacking
    elif r < 0.7 or not classes:
        classes.append(lacking)
    elif len(classes) > 1:
        classes.pop(rng.randrange(len(classes)))
    return random_inspection(rng, recipe, classes[:5], n_extra=0)


def make_pair(inspection: Inspection, style: str, rng: random.Random | None) -> dict:
    facts = facts_from_inspection(inspection, issued=inspection.time)
    return {"inspection": _plain(inspection), "style": style,
            "report": narrative(facts, style, rng)}


def _plain(inspection: Inspection) -> dict:
    d = inspection.to_dict()
    for f in d["findings"]:
        f["mask_rle"] = None
    return d


def read_pairs(path: str | Path) -> list[dict]:
    """Pairs from a JSONL file; reports with literal numbers are turned into slotted text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file (JSONL of findings/report pairs)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            insp = Inspection.from_dict(rec["inspection"])
            report = rec["report"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a findings/report pair ({exc}); each line needs "
                             "'inspection' (an Inspection dict) and 'report' (text)") from exc
        if "{" not in report:
            report = slotify(report, facts_from_inspection(insp, issued=insp.time))
        out.append({"inspection": _plain(insp), "style": rec.get("style", "en"),
                    "report": report})
    return out


def write_pairs(path: str | Path, pairs: list[dict]) -> None:
    atomic_write.write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n"
                                          for p in pairs))


def pair_facts(pair: dict) -> ReportFacts:
    insp = Inspection.from_dict(pair["inspection"])
    return facts_from_inspection(insp, issued=insp.time)


def build_pairs(
    n: int,
    styles: Iterable[str] = ("en",),
    *,
    seeds: list[dict] | None = None,
    recipe: Recipe | None = None,
    seed: int = 0,
    threshold: float = 0.7,
    paraphraser: Callable[[ReportFacts, str], str] | None = None,
    max_candidates: int | None = None,
) -> tuple[list[dict], BuildStats]:
    """Up to n pairs per style (seed pairs first, then generated ones)."""
    recipe = recipe or load_recipe(DEMO_RECIPE)
    rng = random.Random(seed)
    styles = tuple(styles)
    stats = BuildStats()
    filters = {s: NearDuplicateFilter(threshold) for s in styles}
    kept: list[dict] = []
    per_style = Counter()

    def offer(pair: dict) -> None:
        style = pair["style"]
        stats.candidates += 1
        facts = pair_facts(pair)
        text, unknown = fill_slots(pair["report"], facts, LANG.get(style, "en"))
        if unknown or not check_text(text, facts).passed:
            stats.failed_check += 1
            return
        if not filters[style].add(text):
            stats.near_duplicates += 1
            return
        kept.append(pair)
        per_style[style] += 1
        stats.classes.update(d.defect_class for d in facts.defects)

    pool = [Inspection.from_dict(s["inspection"]) for s in seeds or []]
    for s in seeds or []:
        if s["style"] in filters:
            offer(s)
    if not pool:
        pool = [random_inspection(rng, recipe) for _ in range(8)]
        for insp in pool:
            for style in styles:
                offer(make_pair(insp, style, None))
    limit = max_candidates or 10 * n * len(styles)
    stalled = Counter()  # candidates in a row that a style did not keep
    give_up = max(300, n)

    def open_styles() -> list[str]:
        return [s for s in styles if per_style[s] < n and stalled[s] < give_up]

    while open_styles() and stats.candidates < limit:
        counts = Counter({c: stats.classes.get(c, 0) for c in recipe.class_names})
        lacking = min(counts, key=lambda c: (counts[c], rng.random()))
        insp = vary(rng, rng.choice(pool), recipe, lacking)
        pool.append(insp)
        for style in open_styles():
            before = per_style[style]
            if paraphraser is not None and rng.random() < 0.5:
                facts = facts_from_inspection(insp, issued=insp.time)
                offer({"inspection": _plain(insp), "style": style,
                       "report": paraphraser(facts, style)})
            else:
                offer(make_pair(insp, style, rng))
            stalled[style] = 0 if per_style[style] > before else stalled[style] + 1
    stats.kept = len(kept)
    stats.styles = per_style
    return kept, stats

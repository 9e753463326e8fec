"""The job summary: counts, verdicts, defects per class, throughput; as JSON and as a table."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from app.batch.inspect_image import ImageRecord
from app.batch.local_backend import PipelineStats


@dataclass
class RunCounts:
    """What happened to the discovered images in this run."""

    found: int = 0
    inspected: int = 0  # this run
    skipped: int = 0  # done by an earlier run (ledger)
    failed: list[dict] = field(default_factory=list)  # {"path", "error"}
    no_prompt_file: int = 0
    prompts_without_image: list[str] = field(default_factory=list)  # COCO entries, no input
    reports_failed: list[dict] = field(default_factory=list)  # {"path", "error"}: not written


def build_summary(records: list[ImageRecord], counts: RunCounts, stats: PipelineStats,
                  engine: str, backend: str, recipe: str | None) -> dict:
    verdicts = Counter(r.inspection.verdict.status for r in records
                       if r.inspection.verdict is not None)
    per_class: dict[str, list] = defaultdict(list)
    for r in records:
        for f in r.inspection.findings:
            per_class[f.defect_class].append(f.measurements)
    classes = {}
    for name, ms in sorted(per_class.items()):
        mm2 = [m.area_mm2 for m in ms if m.area_mm2 is not None]
        classes[name] = {
            "defects": len(ms),
            "images": sum(any(f.defect_class == name for f in r.inspection.findings)
                          for r in records),
            "mean_area_px": sum(m.area_px for m in ms) / len(ms),
            "mean_area_mm2": sum(mm2) / len(mm2) if mm2 else None,
            "max_length_px": max(m.feret_max_px for m in ms),
        }
    n = counts.inspected
    return {
        "engine": engine, "backend": backend, "recipe": recipe,
        "images_found": counts.found, "images_inspected": n, "images_skipped": counts.skipped,
        "images_failed": len(counts.failed), "images_reported": len(records),
        "images_without_prompt_file": counts.no_prompt_file,
        "failed": counts.failed,
        "reports_failed": len(counts.reports_failed),
        "failed_reports": counts.reports_failed,
        "prompt_entries_without_image": counts.prompts_without_image,
        "verdicts": dict(sorted(verdicts.items())),
        "defects": sum(c["defects"] for c in classes.values()),
        "classes": classes,
        "wall_s": round(stats.wall_s, 3),
        "images_per_s": round(n / stats.wall_s, 4) if stats.wall_s and n else None,
        "encoder_busy_s": round(stats.encoder_s, 3),
        "encoder_utilisation": round(stats.encoder_utilisation, 4) if stats.encoder_s else None,
    }


def format_table(s: dict) -> str:
    """A plain-text table of the summary for the terminal."""
    lines = [
        f"{'images':<12}{'found':>8}{'inspected':>11}{'skipped':>9}{'failed':>8}{'reported':>10}",
        f"{'':<12}{s['images_found']:>8}{s['images_inspected']:>11}{s['images_skipped']:>9}"
        f"{s['images_failed']:>8}{s['images_reported']:>10}",
    ]
    if s["verdicts"]:
        lines.append("verdicts    " + "  ".join(f"{k} {v}" for k, v in s["verdicts"].items()))
    if s["classes"]:
        lines.append(f"{'class':<12}{'defects':>8}{'images':>8}{'mean px':>10}{'mean mm2':>10}"
                     f"{'max len px':>12}")
        for name, c in s["classes"].items():
            mm2 = "" if c["mean_area_mm2"] is None else f"{c['mean_area_mm2']:.3f}"
            lines.append(f"{name[:12]:<12}{c['defects']:>8}{c['images']:>8}"
                         f"{c['mean_area_px']:>10.1f}{mm2:>10}{c['max_length_px']:>12.1f}")
    rate = s["images_per_s"]
    thr = f"{rate:.3f} images/s" if rate else "no images inspected"
    util = s["encoder_utilisation"]
    enc = f", encoder busy {100 * util:.0f}% of the time" if util else ""
    lines.append(f"throughput  {thr} over {s['wall_s']:.1f} s ({s['backend']}){enc}")
    for f in s["failed"][:10]:
        lines.append(f"failed      {f['path']}: {f['error']}")
    if len(s["failed"]) > 10:
        lines.append(f"failed      ... and {len(s['failed']) - 10} more (summary.json)")
    for f in s["failed_reports"][:10]:
        lines.append(f"not written {f['path']}: {f['error']}")
    if len(s["failed_reports"]) > 10:
        lines.append(f"not written ... and {len(s['failed_reports']) - 10} more (summary.json)")
    return "\n".join(lines)

"""Inspection reports: a deterministic template and a local Llama (+ LoRA) whose text is
fact-checked against the findings; Markdown, HTML and PDF output.

    from app.report import render, write_report
    html = render(inspection, "html")                 # template narrative
    write_report(inspection, "r.pdf", writer=load_writer("models/report-demo"))
"""

from __future__ import annotations

from pathlib import Path

from app.inspection.findings import Inspection
from app.outputs import atomic_write
from app.report.generate import Report, build_report

__all__ = ["Report", "build_report", "render", "write_report"]


def render(inspection: Inspection | Report, fmt: str = "html", **kw) -> str | bytes:
    """The report of an inspection as "md" or "html" text or "pdf" bytes. kw go to
    build_report (recipe, writer, style, approver, issued, image_root, model_error). Markdown
    refers to its images by name (write_report saves them)."""
    from app.report.documents import render_report

    report = inspection if isinstance(inspection, Report) else build_report(inspection, **kw)
    doc, _ = render_report(report, fmt)
    return doc


def write_report(inspection: Inspection, out: str | Path, fmt: str | None = None,
                 **kw) -> Report:
    """Write the report to out (format from fmt or the suffix: .md, .html, .pdf); Markdown
    images go to a folder OUT_images beside it. Returns the Report (narrative status inside)."""
    from app.report.documents import FORMATS, render_report

    out = Path(out)
    suffix = out.suffix.lstrip(".").lower()
    fmt = fmt or {"markdown": "md", "htm": "html"}.get(suffix, suffix)
    if fmt not in FORMATS:
        raise ValueError(f"{out}: cannot tell the report format from the suffix; use .md, "
                         ".html or .pdf (or give fmt)")
    report = build_report(inspection, **kw)
    folder = out.with_name(out.stem + "_images")
    doc, images = render_report(report, fmt, image_prefix=f"{folder.name}/")
    if fmt == "md":
        for im in images:
            atomic_write.write_bytes(folder / im.name, im.png)
    if isinstance(doc, str):
        atomic_write.write_text(out, doc)
    else:
        atomic_write.write_bytes(out, doc)
    return report

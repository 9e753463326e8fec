"""A Report as Markdown, HTML (self-contained) or PDF (Qt's QTextDocument + QPdfWriter).

Layout (ISO/IEC 17020 7.4.2): identification (report id, dates, part, serial, lot, station,
operator, approver), method (engine, model, recipe, report text source), results with units
against the requirements, the narrative with its provenance and fact check, the statement of
conformity, images (the part with the mask overlays, a crop of each defect), signatures.
Everything but the narrative comes straight from the findings.
"""

from __future__ import annotations

import base64
import html
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.inspection.findings import FAIL, PASS
from app.outputs.overlay import PALETTE, draw_overlay
from app.report.facts import RULE_LABELS, DefectFacts, ReportFacts
from app.report.generate import Report

FORMATS = ("md", "html", "pdf")


@dataclass(frozen=True)
class ReportImage:
    name: str  # file name, e.g. "part.png", "defect_1.png"
    caption: str
    png: bytes
    width: int
    height: int


def _fmt(q, unit: bool = False) -> str:
    if q is None:
        return "–"
    s = q.text("en")
    return s if unit else s.removesuffix(" " + q.unit) if q.unit else s


def _conformity(f: ReportFacts) -> str:
    recipe = f"{f.recipe_name} {f.recipe_version}".strip() or "(no recipe named)"
    if f.verdict == PASS:
        return f"The part CONFORMS to the requirements of recipe {recipe}: PASS."
    if f.verdict == FAIL:
        n = len(f.reasons)
        return (f"The part DOES NOT CONFORM to the requirements of recipe {recipe}: FAIL "
                f"({n} nonconformit{'y' if n == 1 else 'ies'}).")
    return "No statement of conformity: the inspection has no verdict."


def identification_rows(f: ReportFacts) -> list[tuple[str, str]]:
    return [
        ("Report id", f.report_id),
        ("Issue date", f.issued.strftime("%Y-%m-%d %H:%M UTC")),
        ("Inspection date", f.inspected.strftime("%Y-%m-%d %H:%M UTC")),
        ("Part", f.part_id or "–"),
        ("Serial", f.serial or "–"),
        ("Lot", f.lot or "–"),
        ("Station", f.station or "–"),
        ("Operator (inspector)", f.operator or "–"),
        ("Approved by", f.approver or "(not yet approved)"),
        ("Image", f"{Path(f.image_path).name} (sha256 {f.image_sha256[:12]})"),
    ]


def method_rows(r: Report) -> list[tuple[str, str]]:
    f = r.facts
    ck = f"checkpoint sha256 {f.checkpoint_sha256[:12]}" if f.checkpoint_sha256 else \
        "no checkpoint"
    return [
        ("Segmentation", f"engine {f.engine or '–'}, model {f.model_id or '–'}, {ck}"),
        ("Measurement", "sam-inspect measure: calibrated mm (length = maximum Feret, width = "
                        "perpendicular thickness)"),
        ("Requirements", f"recipe {f.recipe_name or '–'} version {f.recipe_version or '–'}"),
        ("Report text", r.narrative.note),
    ]


def _result(d: DefectFacts, f: ReportFacts) -> str:
    if not f.verdict:
        return "not judged"  # no verdict yet: an "OK" here would claim a check never made
    broken = [RULE_LABELS.get(x.rule, (x.rule,))[0] for x in f.reasons if x.defect == d.index]
    return "NOT OK: " + ", ".join(broken) if broken else "OK"


def _limit(d: DefectFacts) -> str:
    parts = [f"{k} ≤ {_fmt(q, True)}" for k, q in d.limits.items()]
    return "; ".join(parts) or "–"


def defect_rows(f: ReportFacts) -> list[list[str]]:
    return [[f"#{d.index}", d.defect_class, _fmt(d.length, True), _fmt(d.width, True),
             _fmt(d.area, True), _limit(d), "–" if d.score is None else f"{d.score:.2f}",
             _result(d, f)] for d in f.defects]


DEFECT_HEADER = ["#", "class", "length", "width", "area", "requirement", "score", "result"]


def nonconformities(f: ReportFacts) -> list[str]:
    out = []
    for r in f.reasons:
        label = RULE_LABELS.get(r.rule, (r.rule,))[0]
        who = f"{r.defect_class} #{r.defect}" if r.defect else r.defect_class
        if r.measured is not None and r.allowed is not None:
            cmp = "<" if r.rule.startswith("min") else ">"
            if r.rule == "forbidden_zone":
                out.append(f"{who}: {_fmt(r.measured, True)} inside forbidden zone "
                           f"'{r.zone}'")
            else:
                out.append(f"{who}: {label} {_fmt(r.measured, True)} {cmp} allowed "
                           f"{_fmt(r.allowed, True)}")
        else:
            out.append(f"{who}: {label}")
    return out


# ---------------------------------------------------------------------------------------------
# images


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("could not encode a report image as PNG")
    return buf.tobytes()


def _resolve_image(r: Report) -> Path | None:
    p = Path(r.inspection.image_path)
    candidates = [p] if p.is_absolute() else [Path(r.image_root or ".") / p, p]
    return next((c for c in candidates if c.is_file()), None)


def report_images(r: Report, max_side: int = 900) -> tuple[list[ReportImage], str]:
    """The part with the overlays and one crop per defect; and a note when there are none."""
    from sam_engine.image_io import load_image

    path = _resolve_image(r)
    if path is None:
        return [], f"image not available: {r.inspection.image_path}"
    rgb = load_image(path)
    h, w = rgb.shape[:2]
    masks = [f.mask if f.mask is not None and f.mask.shape == (h, w) else np.zeros((h, w), bool)
             for f in r.inspection.findings]
    boxes = [d.bbox for d in r.facts.defects]
    boxes = boxes if all(b is not None for b in boxes) else None
    over = draw_overlay(rgb, masks, boxes, numbers=[d.index for d in r.facts.defects])
    images = []
    scale = min(1.0, max_side / max(h, w))
    full = cv2.resize(over, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1 else over
    images.append(ReportImage("part.png", "Part with the defect masks", _png(full),
                              full.shape[1], full.shape[0]))
    for d, m in zip(r.facts.defects, masks, strict=True):
        if d.bbox is None and not m.any():
            continue
        if m.any():
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        else:
            x0, y0, x1, y1 = d.bbox
        pad = max(12, (x1 - x0) // 2, (y1 - y0) // 2)
        x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
        x1, y1 = min(w, x1 + pad), min(h, y1 + pad)
        crop = over[y0:y1, x0:x1]
        k = max(1, int(160 / max(crop.shape[:2])))
        crop = cv2.resize(crop, (crop.shape[1] * k, crop.shape[0] * k),
                          interpolation=cv2.INTER_NEAREST) if k > 1 else crop
        colour = PALETTE[(d.index - 1) % len(PALETTE)]
        del colour
        images.append(ReportImage(f"defect_{d.index}.png",
                                  f"#{d.index} {d.defect_class}", _png(np.ascontiguousarray(crop)),
                                  crop.shape[1], crop.shape[0]))
    return images, ""


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(r: Report, images: list[ReportImage], image_note: str = "",
                image_prefix: str = "") -> str:
    f = r.facts
    out = [f"# Inspection report {f.report_id}", "",
           _md_table(["Field", "Value"], [list(x) for x in identification_rows(r.facts)]), "",
           "## Method", "", _md_table(["", ""], [list(x) for x in method_rows(r)]), "",
           "## Results", ""]
    if f.defects:
        out += [_md_table(DEFECT_HEADER, defect_rows(f)), ""]
    else:
        out += ["No defects were found.", ""]
    if f.reasons:
        out += ["Nonconformities:", ""] + [f"- {x}" for x in nonconformities(f)] + [""]
    out += ["## Summary", "", r.narrative.text, "", f"*{r.narrative.note}*", "",
            "## Statement of conformity", "", f"**{_conformity(f)}**", "", "## Images", ""]
    if image_note:
        out += [image_note, ""]
    for im in images:
        out += [f"![{im.caption}]({image_prefix}{im.name})", f"*{im.caption}*", ""]
    out += ["## Signatures", "", f"Inspector: {f.operator or '________'}  ", "Signature: ________",
            "", f"Approved by: {f.approver or '________'}  ", "Signature: ________", ""]
    return "\n".join(out)


CSS = """body{font-family:'DejaVu Sans',Arial,sans-serif;font-size:10pt;margin:2em}
h1{font-size:16pt}h2{font-size:12pt;border-bottom:1px solid #888;margin-top:1.2em}
table{border-collapse:collapse}td,th{border:1px solid #999;padding:3px 6px;text-align:left}
th{background:#eee}.ok{color:#006400}.bad{color:#b00000;font-weight:bold}
.note{color:#555;font-style:italic}.stmt{font-weight:bold;font-size:11pt}"""


def _html_table(header: list[str] | None, rows: list[list[str]], cls_col: int | None = None) -> str:
    e = html.escape
    out = ["<table cellspacing='0' cellpadding='3' border='1'>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ""
            if i == cls_col:
                cls = " class='ok'" if c == "OK" else " class='bad'"
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</table>"


def to_html(r: Report, images: list[ReportImage], image_note: str = "",
            src=lambda im: "data:image/png;base64," + base64.b64encode(im.png).decode()) -> str:
    """Self-contained HTML (images as data URIs unless src maps them elsewhere)."""
    e = html.escape
    f = r.facts
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Inspection report "
             f"{e(f.report_id)}</title><style>{CSS}</style></head><body>",
             f"<h1>Inspection report {e(f.report_id)}</h1>",
             _html_table(None, [list(x) for x in identification_rows(f)]),
             "<h2>Method</h2>", _html_table(None, [list(x) for x in method_rows(r)]),
             "<h2>Results</h2>"]
    parts.append(_html_table(DEFECT_HEADER, defect_rows(f), cls_col=7) if f.defects
                 else "<p>No defects were found.</p>")
    if f.reasons:
        parts.append("<p>Nonconformities:</p><ul>" +
                     "".join(f"<li>{e(x)}</li>" for x in nonconformities(f)) + "</ul>")
    body = "<br/>".join(e(line) for line in r.narrative.text.split("\n"))
    parts += ["<h2>Summary</h2>", f"<p>{body}</p>", f"<p class='note'>{e(r.narrative.note)}</p>",
              "<h2>Statement of conformity</h2>", f"<p class='stmt'>{e(_conformity(f))}</p>",
              "<h2>Images</h2>"]
    if image_note:
        parts.append(f"<p class='note'>{e(image_note)}</p>")
    for im in images:
        parts.append(f"<p><img src='{src(im)}' width='{im.width}' height='{im.height}' "
                     f"alt='{e(im.caption)}'/><br/><i>{e(im.caption)}</i></p>")
    parts += ["<h2>Signatures</h2>",
              _html_table(None, [["Inspector", f.operator or "", "Signature:"],
                                 ["Approved by", f.approver or "", "Signature:"]]),
              "</body></html>"]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# PDF


def _qt_app():
    """The Qt application for fonts and painting (offscreen when there is no display). A full
    QApplication, not a QGuiApplication: the process may open windows later (the GUI, its
    tests), and Qt aborts on a widget made under a QGuiApplication."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                     os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication([sys.argv[0] if sys.argv else "sam-inspect"])
    return app


def to_pdf(r: Report, images: list[ReportImage], image_note: str = "") -> bytes:
    """PDF bytes (A4) laid out by QTextDocument from the report's HTML."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QMarginsF, QUrl
    from PySide6.QtGui import QImage, QPageLayout, QPageSize, QPdfWriter, QTextDocument

    _qt_app()
    doc = QTextDocument()
    doc.setDefaultStyleSheet(CSS)
    for im in images:
        qimg = QImage.fromData(im.png, "PNG")
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"report:{im.name}"),
                        qimg)
    scaled = [ReportImage(im.name, im.caption, im.png, *_fit(im.width, im.height, 480))
              for im in images]
    doc.setHtml(to_html(r, scaled, image_note, src=lambda im: f"report:{im.name}"))
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buf)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)
    writer.setResolution(96)
    writer.setTitle(f"Inspection report {r.facts.report_id}")
    writer.setCreator("sam-inspect")
    doc.setPageSize(writer.pageLayout().paintRectPixels(96).size().toSizeF())
    doc.print_(writer)
    del writer
    buf.close()
    return bytes(data.data())


def _fit(w: int, h: int, max_w: int) -> tuple[int, int]:
    if w <= max_w:
        return w, h
    return max_w, round(h * max_w / w)


# ---------------------------------------------------------------------------------------------


def render_report(r: Report, fmt: str, image_prefix: str = "") -> tuple[str | bytes,
                                                                        list[ReportImage]]:
    """(document, images): str for md/html, bytes for pdf; md refers to the images by name."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    images, note = report_images(r)
    if fmt == "md":
        return to_markdown(r, images, note, image_prefix), images
    if fmt == "html":
        return to_html(r, images, note), images
    return to_pdf(r, images, note), images

"""Render icon.svg to icon.png (256 px, for the Linux desktop entry) and icon.ico (Windows exe).

    .venv/bin/python packaging/desktop/make_icon.py

The PNG and ICO are committed; re-run this after editing the SVG. The ICO holds PNG images
(16-256 px), a format Windows has read since Vista; it is written by hand here because it is
a 6-byte header plus one 16-byte entry per image, not worth a dependency.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_png(svg: Path, size: int) -> bytes:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtGui, QtSvg

    _ = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication([])
    renderer = QtSvg.QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    img = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32)
    img.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(img)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    buf = QtCore.QBuffer()
    buf.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    img.save(buf, "PNG")
    return bytes(buf.data())


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = 6 + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, data in sorted(pngs.items()):
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICO directory entry
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
        blobs += data
    return header + entries + blobs


def main() -> int:
    svg = HERE / "icon.svg"
    pngs = {s: render_png(svg, s) for s in SIZES}
    (HERE / "icon.png").write_bytes(pngs[256])
    (HERE / "icon.ico").write_bytes(ico_bytes(pngs))
    print(f"wrote {HERE / 'icon.png'} and {HERE / 'icon.ico'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

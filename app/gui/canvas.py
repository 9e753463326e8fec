"""The image canvas: a QGraphicsView in image-pixel scene coordinates.

Left click = positive point, right click or Shift+click = negative point, left drag = box,
Alt+click (or any click in select mode) = select the accepted defect under the cursor, middle
drag or Ctrl+drag = pan, wheel = zoom at the cursor, fit() = whole image. Defect labels, the
PASS/FAIL badge and the selected defect's measurements are drawn in view coordinates on top
(drawForeground), so they stay readable and inside the view at any zoom. Scene point
(x, y) is image pixel coordinates (pixel (r, c) covers [c, c+1) x [r, r+1)), the same frame as
sam_engine prompts. Images are painted from numpy arrays without copies (QImage over the array's
buffer); a zoomed-out large image paints from a smaller pyramid level; 16-bit images go through a
window/level look-up table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetrics,
    QImage,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsPathItem,
    QGraphicsPolygonItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
)

from app.gui.images import LoadedImage, apply_window, window_lut
from app.gui.mask_geometry import MaskShape

DRAG_THRESHOLD_PX = 5  # screen pixels a press must move to become a box drag
MAX_ZOOM = 64.0
LIVE_COLOUR = QColor(255, 60, 255)  # magenta: apart from the defect palette
POSITIVE = QColor(40, 220, 60)
NEGATIVE = QColor(240, 40, 40)
OVERLAY_ALPHA = 0.4
MARKER_RADIUS = 3.5  # screen pixels: a click marker must not hide a small defect
ZONE_COLOUR = QColor(255, 80, 80)
DATUM_COLOUR = QColor(80, 200, 255)
PASS_COLOUR = QColor(26, 127, 55)
FAIL_COLOUR = QColor(207, 34, 46)
LABEL_PAD = 3  # screen pixels around label text


@dataclass(frozen=True)
class DefectDraw:
    """An accepted defect as the canvas draws it: its mask, colour, number and label text."""

    shape: MaskShape
    colour: QColor
    number: int
    label: str


@dataclass(frozen=True)
class Overlay:
    """The recipe's geometry drawn over the image: forbidden zones (name, polygon) and the datum
    (kind "point" or "line", its points), in image pixels."""

    zones: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()
    datum: tuple[str, tuple[tuple[float, float], ...]] | None = None


def qimage_of(array: np.ndarray) -> QImage:
    """A QImage over a C-contiguous uint8 grey (H, W) or RGB (H, W, 3) array, sharing its memory
    (the caller keeps the array alive as long as the QImage)."""
    h, w = array.shape[:2]
    fmt = QImage.Format.Format_Grayscale8 if array.ndim == 2 else QImage.Format.Format_RGB888
    return QImage(array.data, w, h, array.strides[0], fmt)


def _premultiplied(colour: QColor, alpha: float) -> int:
    a = int(round(alpha * 255))
    return (a << 24) | (colour.red() * a // 255 << 16) | (colour.green() * a // 255 << 8) | (
        colour.blue() * a // 255
    )


def overlay_qimage(crop: np.ndarray, colour: QColor, alpha: float = OVERLAY_ALPHA,
                   edge: np.ndarray | None = None):
    """(QImage, backing array): the crop's pixels in colour at alpha, its edge pixels (if given)
    opaque, transparent elsewhere."""
    fill = _premultiplied(colour, alpha)
    argb = crop.astype(np.uint32)  # 0/1; multiplying is faster than masked assignment
    argb *= np.uint32(fill)
    if edge is not None:  # edge pixels lie inside the crop: lift them from fill to opaque
        argb += edge.astype(np.uint32) * np.uint32(_premultiplied(colour, 1.0) - fill)
    h, w = crop.shape
    return QImage(argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied), argb


class ImageItem(QGraphicsItem):
    """Paints an image from the pyramid level that matches the zoom."""

    def __init__(self) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self._levels: list[np.ndarray] = []
        self._cache: dict[int, tuple[QImage, np.ndarray]] = {}
        self._lut: np.ndarray | None = None
        self._size = (0, 0)  # (H, W)

    def set_image(self, image: LoadedImage | None, lut: np.ndarray | None = None) -> None:
        self.prepareGeometryChange()
        self._levels = [] if image is None else image.levels
        self._size = (0, 0) if image is None else image.size
        self._lut = lut
        self._cache.clear()
        self.update()

    def set_lut(self, lut: np.ndarray | None) -> None:
        self._lut = lut
        self._cache.clear()
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt override)
        return QRectF(0, 0, self._size[1], self._size[0])

    def level_for(self, lod: float) -> int:
        """The coarsest level still at least as fine as the screen (lod = screen px per image
        px)."""
        k = 0
        while k + 1 < len(self._levels) and 2.0 ** -(k + 1) >= lod:
            k += 1
        return k

    def _qimage(self, k: int) -> QImage:
        if k not in self._cache:
            level = self._levels[k]
            if level.dtype == np.uint16:
                level = apply_window(level, self._lut if self._lut is not None else
                                     window_lut(65535, 32768))
            self._cache[k] = (qimage_of(level), level)
        return self._cache[k][0]

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        if not self._levels:
            return
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        k = self.level_for(lod)
        img = self._qimage(k)
        exposed = option.exposedRect.intersected(self.boundingRect())
        if exposed.isEmpty():
            return
        sx = img.width() / self._size[1]
        sy = img.height() / self._size[0]
        src = QRectF(exposed.x() * sx, exposed.y() * sy, exposed.width() * sx,
                     exposed.height() * sy)
        # zoomed in, inspectors want to see the pixels; zoomed out, a smooth picture
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, lod < 1.0)
        painter.drawImage(exposed, img, src)


class MaskItem(QGraphicsItem):
    """A semi-transparent mask (cropped to its box) with its outline."""

    def __init__(self, shape: MaskShape, colour: QColor, number: int | None = None) -> None:
        super().__init__()
        self.shape_data = shape
        self.number = number
        self.colour = colour
        self._img, self._buf = overlay_qimage(shape.crop, colour, edge=shape.edge)
        self.setPos(shape.x0, shape.y0)
        path = QPainterPath()
        for poly in shape.outlines:
            path.addPolygon(QPolygonF([QPointF(x - shape.x0, y - shape.y0) for x, y in poly]))
            path.closeSubpath()
        self.outline = QGraphicsPathItem(path, self)
        pen = QPen(colour, 2)
        pen.setCosmetic(True)
        self.outline.setPen(pen)
        self.highlighted = False
        self._frame: QGraphicsRectItem | None = None

    def set_highlight(self, on: bool) -> None:
        """The selected defect: a thick outline and a white frame around its box."""
        if on == self.highlighted:
            return
        self.highlighted = on
        pen = QPen(QColor(255, 255, 255) if on else self.colour, 4 if on else 2)
        pen.setCosmetic(True)
        self.outline.setPen(pen)
        if on:
            w, h = self._img.width(), self._img.height()
            self._frame = QGraphicsRectItem(QRectF(-2, -2, w + 4, h + 4), self)
            frame = QPen(QColor(255, 255, 255), 2, Qt.PenStyle.DashLine)
            frame.setCosmetic(True)
            self._frame.setPen(frame)
        elif self._frame is not None:
            self._frame.setParentItem(None)
            if self._frame.scene() is not None:
                self._frame.scene().removeItem(self._frame)
            self._frame = None

    def contains_pixel(self, x: float, y: float) -> bool:
        c, r = int(np.floor(x - self.shape_data.x0)), int(np.floor(y - self.shape_data.y0))
        crop = self.shape_data.crop
        return 0 <= r < crop.shape[0] and 0 <= c < crop.shape[1] and bool(crop[r, c])

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt override)
        return QRectF(0, 0, self._img.width(), self._img.height())

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.drawImage(QPointF(0, 0), self._img)


class Canvas(QGraphicsView):
    """Shows one image with live masks, accepted defects and prompt markers."""

    pointClicked = Signal(float, float, int)  # x, y, label
    defectClicked = Signal(object)  # number of the accepted defect clicked (Alt / select mode)
    boxDrawn = Signal(float, float, float, float)  # x0, y0, x1, y1
    cycleRequested = Signal(int)  # +1 (Tab) / -1 (Shift+Tab)
    hovered = Signal(float, float)
    overlayPainted = Signal(int)  # generation of the overlay that was just painted

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.NoDrag)
        self.setMouseTracking(True)
        self.setBackgroundBrush(QBrush(QColor(48, 48, 48)))
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.image_item = ImageItem()
        self.scene().addItem(self.image_item)
        self.image: LoadedImage | None = None
        self._live: list[QGraphicsItem] = []
        self._defects: list[QGraphicsItem] = []
        self._markers: list[QGraphicsItem] = []
        self._rubber: QGraphicsRectItem | None = None
        self._press: tuple[QPointF, QPointF, int] | None = None  # view pos, scene pos, label
        self._pan_from: QPointF | None = None
        self._fit_mode = True
        self._defect_draws: list[DefectDraw] = []
        self._zone_items: list[QGraphicsItem] = []
        self.overlay = Overlay()
        self.selected: int | None = None  # number of the highlighted defect
        self.badge: tuple[str, bool] | None = None  # (text, passed) of the big verdict badge
        self.details: list[str] = []  # measurements of the selected defect, beside the badge
        self.show_prompts = True
        self.show_zones = True
        self.select_mode = False
        self.label_rects: list[tuple[int, QRectF]] = []  # (number, viewport rect) last drawn
        self.badge_rect: QRectF | None = None
        self.overlay_generation = 0
        self._painted_generation = 0
        self.last_paint_ms = 0.0  # the latest paintEvent's duration (benchmarks read it)

    # ------------------------------------------------------------------ content
    def set_image(self, image: LoadedImage | None, lut: np.ndarray | None = None) -> None:
        self.image = image
        self.selected = None
        self.badge, self.details = None, []
        self.clear_live()
        self.set_defects([])
        self.set_markers((), ())
        self.image_item.set_image(image, lut)
        h, w = (0, 0) if image is None else image.size
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        self.fit()

    def set_lut(self, lut: np.ndarray | None) -> None:
        self.image_item.set_lut(lut)

    def clear_live(self) -> None:
        for item in self._live:
            self.scene().removeItem(item)
        self._live = []
        self._bump()

    def set_live(self, shapes: list[MaskShape]) -> None:
        """The masks of the prompts in progress."""
        if [id(s) for s in shapes] == [id(item.shape_data) for item in self._live]:
            # nothing changes (a click's refresh before its mask is decoded): a one-pixel
            # update still reports the overlay as painted, without redrawing the whole view
            # beside the decoder
            self.overlay_generation += 1
            self.viewport().update(0, 0, 1, 1)
            return
        for item in self._live:
            self.scene().removeItem(item)
        self._live = [MaskItem(s, LIVE_COLOUR) for s in shapes]
        for item in self._live:
            item.setZValue(3)
            self.scene().addItem(item)
        self._bump()

    def set_defects(self, defects: list[DefectDraw]) -> None:
        """Accepted defects, each with its number (labels are drawn in view coordinates)."""
        for item in self._defects:
            self.scene().removeItem(item)
        self._defect_draws = list(defects)
        self._defects = [MaskItem(d.shape, d.colour, d.number) for d in defects]
        for item in self._defects:
            item.setZValue(2)
            item.set_highlight(item.number == self.selected)
            self.scene().addItem(item)
        self._bump()

    def set_selected(self, number: int | None) -> None:
        """Highlight the accepted defect with this number (None: none)."""
        self.selected = number
        for item in self._defects:
            item.set_highlight(item.number == number)
        self.viewport().update()

    def defect_items(self) -> list[MaskItem]:
        return list(self._defects)

    def defect_at(self, x: float, y: float) -> int | None:
        """The number of the accepted defect covering image point (x, y) (the topmost, i.e.
        the latest drawn), or None."""
        for item in reversed(self._defects):
            if item.contains_pixel(x, y):
                return item.number
        return None

    def set_verdict_badge(self, badge: tuple[str, bool] | None, details: list[str]) -> None:
        """The big PASS / FAIL badge ((text, passed) or None) and the lines beside it."""
        self.badge, self.details = badge, list(details)
        self.viewport().update()

    def set_overlay(self, overlay: Overlay) -> None:
        """The recipe's forbidden zones and datum, drawn over the image."""
        self.overlay = overlay
        for item in self._zone_items:
            self.scene().removeItem(item)
        self._zone_items = []
        for _name, poly in overlay.zones:
            item = QGraphicsPolygonItem(QPolygonF([QPointF(x, y) for x, y in poly]))
            pen = QPen(ZONE_COLOUR, 1.5, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            item.setPen(pen)
            item.setBrush(QBrush(QColor(ZONE_COLOUR.red(), ZONE_COLOUR.green(),
                                        ZONE_COLOUR.blue(), 28), Qt.BrushStyle.BDiagPattern))
            self._zone_items.append(item)
        if overlay.datum is not None:
            kind, pts = overlay.datum
            pen = QPen(DATUM_COLOUR, 2, Qt.PenStyle.DashDotLine)
            pen.setCosmetic(True)
            if kind == "line" and len(pts) == 2:
                item = QGraphicsLineItem(pts[0][0], pts[0][1], pts[1][0], pts[1][1])
                item.setPen(pen)
            else:
                item = QGraphicsEllipseItem(-6, -6, 12, 12)
                item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
                item.setPos(pts[0][0], pts[0][1])
                item.setPen(pen)
            self._zone_items.append(item)
        for item in self._zone_items:
            item.setZValue(1)
            item.setVisible(self.show_zones)
            self.scene().addItem(item)
        self.viewport().update()

    def set_show_zones(self, on: bool) -> None:
        self.show_zones = on
        for item in self._zone_items:
            item.setVisible(on)
        self.viewport().update()

    def set_show_prompts(self, on: bool) -> None:
        """Hide or show the click and box markers (H): they may cover a small defect."""
        self.show_prompts = on
        for item in self._markers:
            item.setVisible(on)

    def set_markers(self, points, boxes) -> None:
        """Prompt markers: points (x, y, label) and boxes (x0, y0, x1, y1)."""
        for item in self._markers:
            self.scene().removeItem(item)
        self._markers = []
        for x0, y0, x1, y1 in boxes:
            rect = QGraphicsRectItem(QRectF(x0, y0, x1 - x0, y1 - y0))
            pen = QPen(QColor(255, 220, 0), 1.5, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            rect.setPen(pen)
            self._markers.append(rect)
        r = MARKER_RADIUS
        for x, y, label in points:
            # a small ring (the pixel under the click stays visible), dark-outlined so it
            # reads on bright and dark surfaces
            ring = QGraphicsEllipseItem(-r, -r, 2 * r, 2 * r)
            ring.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
            ring.setPos(x, y)
            ring.setPen(QPen(POSITIVE if label else NEGATIVE, 2))
            ring.setBrush(QBrush(Qt.BrushStyle.NoBrush))
            outline = QGraphicsEllipseItem(-r - 1.5, -r - 1.5, 2 * r + 3, 2 * r + 3, ring)
            outline.setPen(QPen(QColor(0, 0, 0, 200), 1))
            self._markers.append(ring)
        for item in self._markers:
            item.setZValue(4)
            item.setVisible(self.show_prompts)
            self.scene().addItem(item)

    def marker_items(self) -> list[QGraphicsItem]:
        return list(self._markers)

    # ------------------------------------------------------------------ view-space drawing
    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        """Defect labels, zone names, the verdict badge and the selected defect's figures, in
        viewport pixels: a background under every text, every box kept inside the view."""
        painter.save()
        painter.resetTransform()
        view = QRectF(self.viewport().rect())
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF(), 9.0))
        painter.setFont(font)
        fm = QFontMetrics(font)
        self.label_rects = []
        if self.image is not None:
            if self.show_zones:
                for name, poly in self.overlay.zones:
                    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                    anchor = self.mapFromScene(QPointF(min(xs), min(ys)))
                    self._text_box(painter, fm, view, f"zone {name}", QPointF(anchor) +
                                   QPointF(2, 2), ZONE_COLOUR, below=True)
                if self.overlay.datum is not None:
                    kind, pts = self.overlay.datum
                    anchor = self.mapFromScene(QPointF(*pts[0]))
                    self._text_box(painter, fm, view, f"datum ({kind})", QPointF(anchor),
                                   DATUM_COLOUR, below=False)
            for d in self._defect_draws:
                x0, y0, _, _ = d.shape.bbox
                anchor = QPointF(self.mapFromScene(QPointF(x0, y0)))
                r = self._text_box(painter, fm, view, d.label, anchor, d.colour, below=False,
                                   bold=d.number == self.selected)
                self.label_rects.append((d.number, r))
        self.badge_rect = None
        if self.badge is not None and self.image is not None:
            self.badge_rect = self._draw_badge(painter, view)
        painter.restore()

    def _text_box(self, painter: QPainter, fm: QFontMetrics, view: QRectF, text: str,
                  anchor: QPointF, colour: QColor, *, below: bool, bold: bool = False) -> QRectF:
        """Draw text on a dark box whose bottom-left (or top-left when below) is at anchor,
        moved inside the view; returns the box."""
        w = fm.horizontalAdvance(text) + 2 * LABEL_PAD
        h = fm.height() + 2 * LABEL_PAD
        x = anchor.x()
        y = anchor.y() if below else anchor.y() - h - 1
        x = min(max(x, view.left() + 1), view.right() - w - 1)
        y = min(max(y, view.top() + 1), view.bottom() - h - 1)
        box = QRectF(x, y, w, h)
        painter.setPen(QPen(colour, 2 if bold else 1))
        painter.setBrush(QBrush(QColor(20, 20, 20, 215)))
        painter.drawRoundedRect(box, 3, 3)
        painter.setPen(QPen(QColor(255, 255, 255) if bold else colour.lighter(130)))
        painter.drawText(box.adjusted(LABEL_PAD, LABEL_PAD, -LABEL_PAD, -LABEL_PAD),
                         int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), text)
        return box

    def _draw_badge(self, painter: QPainter, view: QRectF) -> QRectF:
        text, passed = self.badge
        big = QFont(self.font())
        big.setPointSizeF(22)
        big.setBold(True)
        fm_big = QFontMetrics(big)
        small = QFont(self.font())
        small.setPointSizeF(max(small.pointSizeF(), 9.5))
        fm = QFontMetrics(small)
        w = max([fm_big.horizontalAdvance(text) + 24]
                + [fm.horizontalAdvance(t) + 16 for t in self.details])
        h = fm_big.height() + 12 + (len(self.details) * fm.height() + 8 if self.details else 0)
        box = QRectF(view.right() - w - 10, view.top() + 10, w, h)
        colour = PASS_COLOUR if passed else FAIL_COLOUR
        painter.setPen(QPen(QColor(255, 255, 255), 2))
        painter.setBrush(QBrush(QColor(20, 20, 20, 215)))
        painter.drawRoundedRect(box, 6, 6)
        head = QRectF(box.left(), box.top(), w, fm_big.height() + 12)
        painter.setBrush(QBrush(colour))
        painter.drawRoundedRect(head, 6, 6)
        painter.setFont(big)
        painter.setPen(QPen(QColor(255, 255, 255)))
        painter.drawText(head, int(Qt.AlignmentFlag.AlignCenter), text)
        painter.setFont(small)
        y = head.bottom() + 4
        for line in self.details:
            painter.drawText(QRectF(box.left() + 8, y, w - 16, fm.height()),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                             line)
            y += fm.height()
        return box

    def _bump(self) -> None:
        self.overlay_generation += 1
        self.viewport().update()

    # ------------------------------------------------------------------ view
    def fit(self) -> None:
        self._fit_mode = True
        if self.image is not None:
            self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the image point under `anchor` (viewport position, default: the centre)
        in place; QGraphicsView's own AnchorUnderMouse needs its mouse tracking, which this view
        replaces with its own."""
        new = self.zoom() * factor
        low = 0.5 * self._fit_zoom()
        if not low <= new <= MAX_ZOOM:
            factor = min(max(new, low), MAX_ZOOM) / self.zoom()
        self._fit_mode = False
        at = (anchor if anchor is not None else QPointF(self.viewport().rect().center())).toPoint()
        fixed = self.mapToScene(at)
        self.scale(factor, factor)
        moved = self.mapFromScene(fixed) - at
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())

    def _fit_zoom(self) -> float:
        r = self.scene().sceneRect()
        vp = self.viewport().rect()
        if r.isEmpty():
            return 1.0
        return min(vp.width() / r.width(), vp.height() / r.height())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit()

    def scrollContentsBy(self, dx: int, dy: int) -> None:  # noqa: N802 (Qt override)
        # the labels and the badge sit in view coordinates: scrolled pixels would move them
        super().scrollContentsBy(dx, dy)
        self.viewport().update()

    def wheelEvent(self, event) -> None:  # noqa: N802 (Qt override)
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(1.0015**delta, event.position())  # 1.2x per wheel notch (120)
        event.accept()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt override)
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_ms = (time.perf_counter() - t0) * 1e3
        if self._painted_generation != self.overlay_generation:
            self._painted_generation = self.overlay_generation
            self.overlayPainted.emit(self._painted_generation)

    # ------------------------------------------------------------------ input
    def event(self, event) -> bool:
        # Tab cycles candidates here instead of moving the keyboard focus
        if event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Tab,
                                                                     Qt.Key.Key_Backtab):
            self.cycleRequested.emit(-1 if event.key() == Qt.Key.Key_Backtab else 1)
            return True
        return super().event(event)

    def _in_image(self, p: QPointF) -> bool:
        return self.image is not None and self.scene().sceneRect().contains(p)

    def _clamp(self, p: QPointF) -> QPointF:
        r = self.scene().sceneRect()
        return QPointF(min(max(p.x(), r.left()), r.right()), min(max(p.y(), r.top()), r.bottom()))

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt override)
        pos = event.position()
        button, mods = event.button(), event.modifiers()
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and mods & Qt.KeyboardModifier.ControlModifier
        ):
            self._pan_from = pos
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
        elif button == Qt.MouseButton.LeftButton and (
            self.select_mode or mods & Qt.KeyboardModifier.AltModifier
        ):
            scene = self.mapToScene(pos.toPoint())
            self.defectClicked.emit(self.defect_at(scene.x(), scene.y())
                                    if self._in_image(scene) else None)
        elif button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            negative = button == Qt.MouseButton.RightButton or bool(
                mods & Qt.KeyboardModifier.ShiftModifier
            )
            self._press = (pos, self.mapToScene(pos.toPoint()), 0 if negative else 1)
        event.accept()

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 (Qt override)
        pos = event.position()
        scene = self.mapToScene(pos.toPoint())
        self.hovered.emit(scene.x(), scene.y())
        if self._pan_from is not None:
            d = pos - self._pan_from
            self._pan_from = pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            self._fit_mode = False
        elif self._press is not None and self._press[2] == 1:
            start_view, start_scene, _ = self._press
            if self._rubber is None and (pos - start_view).manhattanLength() > DRAG_THRESHOLD_PX:
                self._rubber = QGraphicsRectItem()
                pen = QPen(QColor(255, 220, 0), 1.5)
                pen.setCosmetic(True)
                self._rubber.setPen(pen)
                self._rubber.setZValue(5)
                self.scene().addItem(self._rubber)
            if self._rubber is not None:
                a, b = self._clamp(start_scene), self._clamp(scene)
                self._rubber.setRect(QRectF(a, b).normalized())
        event.accept()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if self._pan_from is not None:
            self._pan_from = None
            self.viewport().unsetCursor()
        elif self._press is not None:
            _, start_scene, label = self._press
            end = self.mapToScene(event.position().toPoint())
            if self._rubber is not None:
                self.scene().removeItem(self._rubber)
                self._rubber = None
                r = QRectF(self._clamp(start_scene), self._clamp(end)).normalized()
                if r.width() >= 1 and r.height() >= 1 and self.image is not None:
                    self.boxDrawn.emit(r.left(), r.top(), r.right(), r.bottom())
            elif self._in_image(start_scene):
                self.pointClicked.emit(start_scene.x(), start_scene.y(), label)
        self._press = None
        event.accept()

    def view_pos_of(self, x: float, y: float):
        """The viewport position (QPoint) showing image point (x, y): for tests and benchmarks."""
        return self.mapFromScene(QPointF(x, y))

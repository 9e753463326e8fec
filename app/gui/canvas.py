"""The image canvas: a QGraphicsView in image-pixel scene coordinates.

Left click = positive point, right click or Shift+click = negative point, left drag = box,
middle drag or Ctrl+drag = pan, wheel = zoom at the cursor, fit() = whole image. Scene point
(x, y) is image pixel coordinates (pixel (r, c) covers [c, c+1) x [r, r+1)), the same frame as
sam_engine prompts. Images are painted from numpy arrays without copies (QImage over the array's
buffer); a zoomed-out large image paints from a smaller pyramid level; 16-bit images go through a
window/level look-up table.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QImage,
    QPainter,
    QPainterPath,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
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

    def __init__(self, shape: MaskShape, colour: QColor, label: str = "") -> None:
        super().__init__()
        self.shape_data = shape
        self._img, self._buf = overlay_qimage(shape.crop, colour, edge=shape.edge)
        self.setPos(shape.x0, shape.y0)
        path = QPainterPath()
        for poly in shape.outlines:
            path.addPolygon(QPolygonF([QPointF(x - shape.x0, y - shape.y0) for x, y in poly]))
            path.closeSubpath()
        outline = QGraphicsPathItem(path, self)
        pen = QPen(colour, 2)
        pen.setCosmetic(True)
        outline.setPen(pen)
        if label:
            text = QGraphicsSimpleTextItem(label, self)
            text.setBrush(QBrush(colour))
            text.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
            text.setPos(0, -2)

    def boundingRect(self) -> QRectF:  # noqa: N802 (Qt override)
        return QRectF(0, 0, self._img.width(), self._img.height())

    def paint(self, painter: QPainter, option, widget=None) -> None:
        painter.drawImage(QPointF(0, 0), self._img)


class Canvas(QGraphicsView):
    """Shows one image with live masks, accepted defects and prompt markers."""

    pointClicked = Signal(float, float, int)  # x, y, label
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
        self.overlay_generation = 0
        self._painted_generation = 0
        self.last_paint_ms = 0.0  # the latest paintEvent's duration (benchmarks read it)

    # ------------------------------------------------------------------ content
    def set_image(self, image: LoadedImage | None, lut: np.ndarray | None = None) -> None:
        self.image = image
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

    def set_defects(self, defects: list[tuple[MaskShape, QColor, str]]) -> None:
        """Accepted defects: (shape, colour, label)."""
        for item in self._defects:
            self.scene().removeItem(item)
        self._defects = [MaskItem(s, c, label) for s, c, label in defects]
        for item in self._defects:
            item.setZValue(2)
            self.scene().addItem(item)
        self._bump()

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
        for x, y, label in points:
            dot = QGraphicsEllipseItem(-5, -5, 10, 10)
            dot.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
            dot.setPos(x, y)
            dot.setBrush(QBrush(POSITIVE if label else NEGATIVE))
            dot.setPen(QPen(QColor(255, 255, 255), 1.5))
            self._markers.append(dot)
        for item in self._markers:
            item.setZValue(4)
            self.scene().addItem(item)

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

"""The folder list: a thumbnail, the file name and the inspection status of every image.

Long names are elided in the middle (the distinguishing end of "part_2024_lot7_0013.png" stays
visible); the full path is the row's tooltip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFontMetrics, QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from app.gui.autosave import IN_PROGRESS, NOT_STARTED
from app.gui.images import THUMB_SIDE

STATUS_COLOURS = {
    NOT_STARTED: QColor(0, 0, 0, 0),
    IN_PROGRESS: QColor(255, 190, 0, 70),
    "PASS": QColor(30, 160, 60, 80),
    "FAIL": QColor(220, 40, 40, 80),
    "unreadable": QColor(120, 120, 120, 90),
}


def icon_of(rgb: np.ndarray) -> QIcon:
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888)
    return QIcon(QPixmap.fromImage(img))  # fromImage copies, so rgb may go


class FolderList(QListWidget):
    """One row per image; `activatedPath` when the inspector picks one."""

    activatedPath = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setIconSize(QSize(THUMB_SIDE, THUMB_SIDE))
        self.setUniformItemSizes(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.paths: list[Path] = []
        self.status: dict[Path, str] = {}
        self._items: dict[Path, QListWidgetItem] = {}
        self.itemClicked.connect(lambda item: self.activatedPath.emit(item.data(Qt.UserRole)))

    def set_paths(self, paths: list[Path], status: dict[Path, str]) -> None:
        self.clear()
        self.paths = list(paths)
        self._items = {}
        blank = QPixmap(THUMB_SIDE, THUMB_SIDE)
        blank.fill(QColor(80, 80, 80))
        for p in paths:
            item = QListWidgetItem(QIcon(blank), "")
            item.setData(Qt.UserRole, p)
            self.addItem(item)
            self._items[p] = item
        self.status = {}
        for p in paths:
            self.set_status(p, status.get(p, NOT_STARTED))

    def set_status(self, path: Path, status: str) -> None:
        item = self._items.get(path)
        if item is None:
            return
        self.status[path] = status
        item.setText(f"{self.elided(path.name)}\n{status}")
        item.setToolTip(f"{path}\n{status}")
        item.setBackground(QBrush(STATUS_COLOURS.get(status, STATUS_COLOURS[NOT_STARTED])))

    def text_width(self) -> int:
        """Pixels a row has for its text (beside the thumbnail)."""
        return max(40, self.viewport().width() - THUMB_SIDE - 16)

    def elided(self, name: str) -> str:
        return QFontMetrics(self.font()).elidedText(name, Qt.TextElideMode.ElideMiddle,
                                                    self.text_width())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        for path, status in self.status.items():
            item = self._items.get(path)
            if item is not None:
                item.setText(f"{self.elided(path.name)}\n{status}")

    def set_thumbnail(self, path: Path, rgb: np.ndarray | None) -> None:
        item = self._items.get(path)
        if item is None:
            return
        if rgb is None:
            self.set_status(path, "unreadable")
        else:
            item.setIcon(icon_of(rgb))

    def select(self, path: Path) -> None:
        item = self._items.get(path)
        if item is not None:
            self.setCurrentItem(item)
            self.scrollToItem(item)

"""The right-hand panel: defect class, current candidate, accepted defects table, verdict."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.findings import Finding, Verdict

COLUMNS = ("#", "class", "area px", "area mm²", "length mm", "width mm", "score")


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def defect_row(i: int, f: Finding) -> list[str]:
    """The table cells of defect i (length: maximum Feret; width: perpendicular thickness)."""
    m = f.measurements
    return [
        str(i + 1),
        f.defect_class,
        "–" if m is None else str(m.area_px),
        _fmt(None if m is None else m.area_mm2),
        _fmt(None if m is None else m.feret_max_mm),
        _fmt(None if m is None else m.thickness_mm),
        _fmt(f.score),
    ]


class DefectPanel(QWidget):
    classChosen = Signal(str)
    applyClass = Signal(int, str)  # defect row, class
    deleteRequested = Signal(int)  # defect row

    def __init__(self, class_names: tuple[str, ...], parent=None) -> None:
        super().__init__(parent)
        self.setMinimumWidth(470)  # every table column visible
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Class"))
        self.classes = QComboBox()
        self.classes.setToolTip("class of the next accepted defect (Ctrl+1…9)")
        row.addWidget(self.classes, 1)
        self.apply = QPushButton("Set on selected")
        self.apply.setToolTip("give the selected defect this class")
        row.addWidget(self.apply)
        layout.addLayout(row)
        self.candidate = QLabel("")
        self.candidate.setToolTip("Tab cycles the candidate masks, 1/2/3 picks one")
        layout.addWidget(self.candidate)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.delete = QPushButton("Delete defect")
        buttons.addWidget(self.delete)
        layout.addLayout(buttons)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.verdict)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.set_classes(class_names)
        self.classes.currentIndexChanged.connect(self._chosen)
        self.apply.clicked.connect(self._apply)
        self.delete.clicked.connect(self._delete)

    def set_classes(self, names: tuple[str, ...]) -> None:
        self.classes.blockSignals(True)
        self.classes.clear()
        for i, name in enumerate(names):
            self.classes.addItem(f"{i + 1}  {name}" if i < 9 else name, name)
        self.classes.blockSignals(False)

    def current_class(self) -> str:
        return self.classes.currentData()

    def choose_class(self, index: int) -> bool:
        if 0 <= index < self.classes.count():
            self.classes.setCurrentIndex(index)
            return True
        return False

    def selected_row(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].row() if rows else None

    def _chosen(self, _index: int) -> None:
        self.classChosen.emit(self.current_class())

    def _apply(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.applyClass.emit(row, self.current_class())

    def _delete(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.deleteRequested.emit(row)

    def show_defects(self, findings: list[Finding], verdict: Verdict | None,
                     stored: Verdict | None) -> None:
        self.table.setRowCount(len(findings))
        for i, f in enumerate(findings):
            for j, text in enumerate(defect_row(i, f)):
                item = QTableWidgetItem(text)
                if j != 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        shown = stored or verdict
        if shown is None:
            self.verdict.setText("")
            return
        colour = "#1a7f37" if shown.passed else "#cf222e"
        head = "Verdict" if stored is not None else "Verdict so far (Ctrl+Enter to finish)"
        reasons = "".join(f"<li>{html.escape(r.message)}</li>" for r in shown.reasons)
        self.verdict.setText(f"{head}: <b style='color:{colour}'>{shown.status}</b>"
                             + (f"<ul>{reasons}</ul>" if reasons else ""))

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

from app.inspection.findings import Finding, Verdict, defect_numbers

COLUMNS = ("#", "class", "area px", "area mm²", "length mm", "width mm", "score")


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def defect_row(number: int, f: Finding) -> list[str]:
    """The table cells of defect `number` (length: maximum Feret; width: perpendicular
    thickness)."""
    m = f.measurements
    return [
        str(number),
        f.defect_class,
        "–" if m is None else str(m.area_px),
        _fmt(None if m is None else m.area_mm2),
        _fmt(None if m is None else m.feret_max_mm),
        _fmt(None if m is None else m.thickness_mm),
        _fmt(f.score),
    ]


class DefectPanel(QWidget):
    """Rows are defects by number: the signals carry defect numbers, never row indices."""

    classChosen = Signal(str)
    applyClass = Signal(int, str)  # defect number, class
    deleteRequested = Signal(int)  # defect number
    selectedChanged = Signal(object)  # defect number or None

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
        self.table.setToolTip("select a row to highlight the defect on the image "
                              "(Alt+click a mask selects it)")
        self.numbers: list[int] = []  # the defect number of each row
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
        self.table.itemSelectionChanged.connect(
            lambda: self.selectedChanged.emit(self.selected_number()))
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

    def selected_number(self) -> int | None:
        row = self.selected_row()
        return self.numbers[row] if row is not None and row < len(self.numbers) else None

    def select_number(self, number: int | None) -> None:
        """Select the row of defect `number` (None: clear the selection)."""
        if number is None or number not in self.numbers:
            self.table.clearSelection()
            return
        self.table.selectRow(self.numbers.index(number))

    def _chosen(self, _index: int) -> None:
        self.classChosen.emit(self.current_class())

    def _apply(self) -> None:
        number = self.selected_number()
        if number is not None:
            self.applyClass.emit(number, self.current_class())

    def _delete(self) -> None:
        number = self.selected_number()
        if number is not None:
            self.deleteRequested.emit(number)

    def show_defects(self, findings: list[Finding], verdict: Verdict | None,
                     stored: Verdict | None) -> None:
        """The defects table and the verdict: the stored one, else the live one once there is
        something to judge (`verdict` None: nothing done on the image yet)."""
        keep = self.selected_number()
        self.numbers = defect_numbers(findings)
        self.table.blockSignals(True)
        self.table.setRowCount(len(findings))
        for i, (f, number) in enumerate(zip(findings, self.numbers, strict=True)):
            for j, text in enumerate(defect_row(number, f)):
                item = QTableWidgetItem(text)
                if j != 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)
        self.select_number(keep)
        if keep is not None and keep not in self.numbers:
            self.selectedChanged.emit(None)
        shown = stored or verdict
        if shown is None:
            self.verdict.setText("Not judged yet: mark the defects, then Ctrl+Enter finishes "
                                 "the image (or Ctrl+Shift+Enter: no defects).")
            return
        colour = "#1a7f37" if shown.passed else "#cf222e"
        head = "Verdict" if stored is not None else "Verdict so far (Ctrl+Enter to finish)"
        reasons = "".join(f"<li>{html.escape(r.message)}</li>" for r in shown.reasons)
        self.verdict.setText(f"{head}: <b style='color:{colour}'>{shown.status}</b>"
                             + (f"<ul>{reasons}</ul>" if reasons else ""))

"""The report panel: the current image's inspection report (app.report), previewed and saved."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
)

from app.gui.file_dialog import get_save_file_name
from app.inspection.findings import Inspection
from app.inspection.recipe import Recipe

FILTERS = "PDF (*.pdf);;HTML (*.html);;Markdown (*.md)"


class ReportDialog(QDialog):
    """Preview of the template report (numbers straight from the stored findings); Save writes
    it as PDF, HTML or Markdown. `folder`: where the save dialog starts (None: the current
    folder). The save dialog never opens the files it lists (app.gui.file_dialog), so showing
    the folder that holds inspections.db leaves the database's locks alone."""

    folder: Path | None = None

    def __init__(self, inspection: Inspection, recipe: Recipe | None, image_root: str | None,
                 parent=None) -> None:
        super().__init__(parent)
        from app.report import render

        self.inspection, self.recipe, self.image_root = inspection, recipe, image_root
        self.setWindowTitle(f"Inspection report: {inspection.part_id or inspection.image_path}")
        layout = QVBoxLayout(self)
        self.browser = QTextBrowser()
        self.browser.setHtml(render(inspection, "html", recipe=recipe, image_root=image_root))
        layout.addWidget(self.browser, 1)
        self.status = QLabel("")
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.save_button = QPushButton("Save…")
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.save_button.clicked.connect(self.choose_file)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(820, 900)

    def choose_file(self) -> None:
        name = f"{self.inspection.part_id or 'report'}.pdf"
        start = str(Path(self.folder) / name) if self.folder is not None else name
        path = get_save_file_name(self, "Save report", start, FILTERS)
        if path:
            self.save(Path(path))

    def save(self, path: Path) -> bool:
        """Write the report (format from the suffix); the outcome shows in the dialog."""
        from app.report import write_report

        try:
            write_report(self.inspection, path, recipe=self.recipe, image_root=self.image_root)
        except Exception as exc:  # a message in the dialog, never a crash of the window
            self.status.setText(f"could not write {path}: {exc}")
            return False
        self.status.setText(f"saved {path}")
        return True

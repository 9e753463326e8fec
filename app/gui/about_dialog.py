"""The About dialog: version, components and licences from app.shell.about (imported lazily: the
packaging helper provides it and a build may lack it)."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QTextBrowser, QVBoxLayout


def about_texts() -> tuple[str, str]:
    """(summary, licences) for the dialog; a plain fallback when app.shell.about is missing."""
    try:
        from app.shell import about
    except ImportError:
        return "sam-inspect (version information not available in this build)", ""
    try:
        info = about.about_info()
        summary = info.summary() if hasattr(info, "summary") else str(info)
        licences = about.licences_text()
    except Exception as exc:  # never let the About box take the app down
        return f"sam-inspect (version information could not be read: {exc})", ""
    return summary, licences


class AboutDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About sam-inspect")
        summary, licences = about_texts()
        layout = QVBoxLayout(self)
        head = QLabel(summary)
        head.setWordWrap(True)
        layout.addWidget(head)
        if licences:
            text = QTextBrowser()
            text.setPlainText(licences)
            layout.addWidget(text, 1)
            self.resize(720, 560)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

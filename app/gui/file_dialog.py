"""File dialogs that never open the files they list.

Qt's file dialog asks its icon provider for each entry's type, and the default provider asks
QMimeDatabase, which opens and reads any file whose name does not settle its type, e.g.
inspections.db, inspections.db-wal and inspections.db-shm. Closing that descriptor drops every
POSIX lock the process holds on the file, SQLite's included: another program then takes the
database for closed and deletes its write-ahead log. These dialogs use Qt's own widget (native
ones on Linux run GTK in this process, which sniffs too; Windows locks are not POSIX) with an
icon provider that goes by the name only.
"""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QFileInfo
from PySide6.QtGui import QAbstractFileIconProvider, QIcon
from PySide6.QtWidgets import QApplication, QFileDialog, QStyle, QWidget


class NameOnlyIconProvider(QAbstractFileIconProvider):
    """Icons and type names from the file name and stat() alone; never reads a file."""

    def icon(self, what) -> QIcon:
        style = QApplication.style()
        if isinstance(what, QFileInfo):
            kind = (QStyle.StandardPixmap.SP_DirIcon if what.isDir()
                    else QStyle.StandardPixmap.SP_FileIcon)
            return style.standardIcon(kind)
        if what == QAbstractFileIconProvider.IconType.Folder:
            return style.standardIcon(QStyle.StandardPixmap.SP_DirIcon)
        if what == QAbstractFileIconProvider.IconType.Drive:
            return style.standardIcon(QStyle.StandardPixmap.SP_DriveHDIcon)
        return style.standardIcon(QStyle.StandardPixmap.SP_FileIcon)

    def type(self, info: QFileInfo) -> str:
        if info.isDir():
            return "Folder"
        suffix = info.suffix()
        return f"{suffix.upper()} file" if suffix else "File"


def file_dialog(parent: QWidget | None, caption: str, start: str = "",
                filters: str = "") -> QFileDialog:
    """A QFileDialog that does not open the files it lists (see the module doc); `start`: a
    folder to show or a file to preselect."""
    dialog = QFileDialog(parent, caption, "", filters)
    if sys.platform != "win32":
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
    provider = NameOnlyIconProvider()
    dialog.setIconProvider(provider)
    dialog.icon_provider = provider  # the dialog does not own it: keep it alive
    if start and os.path.isdir(start):
        dialog.setDirectory(start)
    elif start:
        dialog.selectFile(start)
    return dialog


def get_save_file_name(parent: QWidget | None, caption: str, start: str = "",
                       filters: str = "") -> str:
    """Like QFileDialog.getSaveFileName (the path, "" when cancelled)."""
    dialog = file_dialog(parent, caption, start, filters)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    return _run(dialog)


def get_open_file_name(parent: QWidget | None, caption: str, start: str = "",
                       filters: str = "") -> str:
    """Like QFileDialog.getOpenFileName (the path, "" when cancelled)."""
    dialog = file_dialog(parent, caption, start, filters)
    dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    return _run(dialog)


def get_existing_directory(parent: QWidget | None, caption: str, start: str = "") -> str:
    """Like QFileDialog.getExistingDirectory (the folder, "" when cancelled)."""
    dialog = file_dialog(parent, caption, start, "")
    dialog.setFileMode(QFileDialog.FileMode.Directory)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly)
    return _run(dialog)


def _run(dialog: QFileDialog) -> str:
    try:
        if dialog.exec() != QFileDialog.DialogCode.Accepted:
            return ""
        files = dialog.selectedFiles()
        return files[0] if files else ""
    finally:
        dialog.deleteLater()

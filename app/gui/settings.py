"""What the window remembers between sessions (QSettings): last folder and image, recipe,
database, window geometry; and the inspector's own keyboard shortcuts.

Shortcuts are configured in the settings file (like labelme's ~/.labelmerc), group
[shortcuts], one action name per key, e.g. on Linux ~/.config/sam-inspect/sam-inspect-gui.conf:

    [shortcuts]
    finish=Ctrl+Return
    accept=Return, Space
    toggle_prompts=H
    quit=

An empty value removes the action's shortcut; Help > Keyboard shortcuts (F1) lists the names.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANISATION = "sam-inspect"
APPLICATION = "sam-inspect-gui"


class Settings:
    """Typed access to QSettings; tests pass their own (e.g. an INI file in tmp_path)."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(ORGANISATION, APPLICATION)

    @classmethod
    def at(cls, path: str | Path) -> Settings:
        return cls(QSettings(str(path), QSettings.Format.IniFormat))

    def _path(self, key: str) -> Path | None:
        v = self.q.value(key)
        return Path(v) if v else None

    @property
    def last_folder(self) -> Path | None:
        return self._path("last_folder")

    @last_folder.setter
    def last_folder(self, folder: Path) -> None:
        self.q.setValue("last_folder", str(folder))

    @property
    def last_image(self) -> Path | None:
        """The image worked on last (the folder reopens there)."""
        return self._path("last_image")

    @last_image.setter
    def last_image(self, path: Path) -> None:
        self.q.setValue("last_image", str(path))

    @property
    def file_name(self) -> str:
        """Where these settings live (shown in the shortcut sheet)."""
        return self.q.fileName()

    def shortcuts(self, name: str) -> list[str] | None:
        """The configured key sequences of action `name` (portable text, e.g. "Ctrl+Q"), [] to
        remove its shortcut, None when not configured."""
        key = f"shortcuts/{name}"
        if not self.q.contains(key):
            return None
        v = self.q.value(key)
        if v is None:
            return []
        items = v if isinstance(v, list) else str(v).split(",")
        return [str(k).strip() for k in items if str(k).strip() and str(k).strip() != "none"]

    @property
    def last_recipe(self) -> Path | None:
        return self._path("last_recipe")

    @last_recipe.setter
    def last_recipe(self, path: Path) -> None:
        self.q.setValue("last_recipe", str(path))

    @property
    def db(self) -> str | None:
        return self.q.value("db") or None

    @db.setter
    def db(self, url_or_path: str) -> None:
        self.q.setValue("db", str(url_or_path))

    def geometry(self) -> QByteArray | None:
        v = self.q.value("geometry")
        return v if isinstance(v, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        v = self.q.value("window_state")
        return v if isinstance(v, QByteArray) else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("geometry", geometry)
        self.q.setValue("window_state", state)

    def sync(self) -> None:
        self.q.sync()

"""Entry point of the desktop window: `sam-inspect gui [FOLDER]` and the desktop bundle."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from app.gui.options import GuiOptions, add_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam-inspect gui",
                                description="Inspect a folder of part photos in a window.")
    add_arguments(p)
    return p


# The X11 libraries Qt's xcb platform plugin links (Qt 6.5+ added xcb-cursor), and their
# Debian/Ubuntu packages: without one, Qt dies with "Could not load the Qt platform plugin
# "xcb"" and no word on what is missing.
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-image": "libxcb-image0",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-randr": "libxcb-randr0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-shape": "libxcb-shape0",
    "xcb-xkb": "libxcb-xkb1",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


def missing_xcb_packages(find_library=None, environ=None) -> list[str]:
    """The Debian/Ubuntu packages Qt's xcb plugin lacks on this machine ([] when the xcb
    plugin is not going to be used: another platform chosen, Wayland, not Linux)."""
    import ctypes.util

    env = os.environ if environ is None else environ
    find = find_library or ctypes.util.find_library
    if not sys.platform.startswith("linux"):
        return []
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return []
    if not platform and env.get("WAYLAND_DISPLAY"):
        return []
    return [pkg for lib, pkg in XCB_LIBRARIES.items() if find(lib) is None]


def run(options: GuiOptions) -> int:
    """Open the window and run until it is closed; returns the exit code."""
    missing = missing_xcb_packages()
    if missing:
        print("sam-inspect: the window cannot open: Qt's X11 (xcb) platform plugin needs "
              f"{', '.join(missing)}. Install {'it' if len(missing) == 1 else 'them'} "
              f"(Debian/Ubuntu: sudo apt-get install {' '.join(missing)}; Fedora: sudo dnf "
              "install xcb-util-cursor xcb-util-wm xcb-util-keysyms), or run under Wayland "
              "(QT_QPA_PLATFORM=wayland).", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("sam-inspect")
    app.setApplicationName("sam-inspect")
    window = MainWindow(options)
    window.show()
    code = int(app.exec())
    if not window.clean_shutdown:
        # an embedding was still being computed: nothing unsaved is lost (every accepted defect
        # is committed), and waiting for the encoder would only keep the window hanging
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(GuiOptions.from_args(args))


if __name__ == "__main__":
    sys.exit(main())

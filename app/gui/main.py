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


def run(options: GuiOptions) -> int:
    """Open the window and run until it is closed; returns the exit code."""
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

"""`sam-inspect gui [FOLDER]`: the inspector's window (Qt is imported only when it runs)."""

from __future__ import annotations

import argparse

from app.gui.options import GuiOptions, add_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="open the inspector's window on a folder of part photos")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.gui.main import run as run_gui

    return run_gui(GuiOptions.from_args(args))

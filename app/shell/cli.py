"""The `sam-inspect` console script: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from app.shell.cli_args import glue_negative_values
from sam_engine.errors import SamEngineError

# Subcommand modules under app.shell.commands, in the order --help lists them.
COMMANDS = ("demo", "gui", "segment", "batch", "eval", "tune", "models", "db", "export_onnx",
            "report",
            "teach", "golden")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with `only` (a command module name) the other commands get empty
    placeholder parsers, so their modules (export_onnx imports torch: seconds) are not imported
    for a run that does not use them."""
    parser = argparse.ArgumentParser(
        prog="sam-inspect", description="Segment and measure defects on photos of parts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name.replace("_", "-"))
            continue
        module = importlib.import_module(f"app.shell.commands.{name}")
        module.add_parser(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command module named by argv (the first word not an option), else None."""
    word = next((a for a in argv if not a.startswith("-")), None)
    name = None if word is None else word.replace("-", "_")
    return name if name in COMMANDS else None


class _Plain(logging.Formatter):
    """What a person reads: INFO lines as plain text, others as "warning: ..." / "error: ..."
    (module names only with --verbose)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(glue_negative_values(argv))
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s") if args.verbose else _Plain()
    )
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler])
    try:
        return int(args.func(args) or 0)
    except SamEngineError as exc:  # our errors already say what to do: no traceback
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sam-inspect: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

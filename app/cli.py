"""The `sam-inspect` console script: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sam_engine.errors import SamEngineError

# Subcommand modules under app.commands, in the order --help lists them.
COMMANDS = ("demo", "gui", "segment", "batch", "eval", "models", "db", "export_onnx", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam-inspect", description="Segment and measure defects on photos of parts."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"app.commands.{name}")
        module.add_parser(sub)
    return parser


class _Plain(logging.Formatter):
    """What a person reads: INFO lines as plain text, others as "warning: ..." / "error: ..."
    (module names only with --verbose)."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg if record.levelno == logging.INFO else f"{record.levelname.lower()}: {msg}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

"""The desktop bundle's entry point (packaging/desktop/sam_inspect_desktop.py calls main()).

    sam-inspect --self-test [...]   check the install (app.shell.self_test), exit 0 / 1
    sam-inspect --version           version, flavour and git hash
    sam-inspect [FOLDER] [...]      the GUI (app.gui.main.main), imported only here

Logs go to app.shell.paths.log_dir() (sam-inspect.log, rotated) and the console when there is one;
the first start without any model logs there how to install one.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from app.shell import paths

log = logging.getLogger("sam-inspect")
LOG_NAME = "sam-inspect.log"
FIRST_RUN_MARKER = ".first-run-message-shown"


def setup_logging(level: int = logging.INFO) -> Path:
    """Log to a rotating file in the user's log folder (and to stderr when there is one)."""
    folder = paths.log_dir()
    path = folder / LOG_NAME
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(path, maxBytes=2 << 20, backupCount=3,
                                             encoding="utf-8")
    ]
    if sys.stderr is not None:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return path


def _redirect_missing_streams(log_path: Path) -> None:
    """A windowed (no console) Windows executable has sys.stdout/stderr = None: send them to
    the log so that prints and tracebacks are not lost."""
    if sys.stdout is None or sys.stderr is None:
        stream = open(log_path, "a", encoding="utf-8", buffering=1)  # open for the process
        sys.stdout = sys.stdout or stream
        sys.stderr = sys.stderr or stream


def first_run_message() -> str | None:
    """The no-model message, once per user (a marker in the user data folder), else None."""
    status = paths.models_status()
    if status.any:
        return None
    marker = paths.user_data_dir() / FIRST_RUN_MARKER
    if marker.exists():
        log.info("no SAM model found in %s", ", ".join(str(d) for d in status.searched))
        return None
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("shown\n", encoding="utf-8")
    except OSError:
        pass
    return paths.no_models_message(status)


def version_line() -> str:
    from app.shell.about import about_info

    info = about_info()
    return f"{info.name} {info.version} ({info.flavour}), git {info.git_hash or 'unknown'}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv:
        print(version_line())
        return 0
    try:
        log_path = setup_logging()
    except OSError as exc:
        print(f"sam-inspect: cannot write logs ({exc}); continuing without a log file",
              file=sys.stderr)
        log_path = None
    else:
        _redirect_missing_streams(log_path)
    log.info("%s starting, log file %s", version_line(), log_path)
    if "--self-test" in argv:
        from app.shell.self_test import run_self_test

        return run_self_test(argv)
    message = first_run_message()
    if message:
        log.warning("%s", message)  # to the log file and, when there is one, the console
    try:
        from app.gui.main import main as gui_main
    except ImportError as exc:
        log.error("the GUI cannot be loaded: %s", exc)
        print(f"sam-inspect: the GUI is not part of this build ({exc})", file=sys.stderr)
        return 2
    try:
        return int(gui_main(argv) or 0)
    except Exception:
        log.exception("sam-inspect stopped on an unexpected error")
        print(f"sam-inspect: unexpected error; details in {log_path}", file=sys.stderr)
        return 1

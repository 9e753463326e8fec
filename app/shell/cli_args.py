"""Command-line helpers shared by the `sam-inspect` commands and `sam-inspect-line`: prompt
values, negative numbers after prompt options, output folders checked before work starts."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from sam_engine.errors import PromptError, SamEngineError


def parse_numbers(text: str, counts: tuple[int, ...], option: str) -> list[float]:
    """'x,y[,label]' or 'x0,y0,x1,y1' -> floats; PromptError naming the option otherwise."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in counts:
        raise PromptError(f"--{option} {text!r}: expected {' or '.join(map(str, counts))} "
                          "comma-separated numbers")
    return vals


PROMPT_OPTIONS = ("--point", "--box")
_NUMBER_LIST = re.compile(r"-[\d.]")


def glue_negative_values(argv: list[str], options: tuple[str, ...] = PROMPT_OPTIONS) -> list[str]:
    """['--point', '-5,-5'] -> ['--point=-5,-5'] for the prompt options.

    argparse takes any value starting with '-' (other than a plain negative number) for an
    option, so `--point -5,-5` would fail with "expected one argument" instead of reaching the
    prompt check that says the point lies outside the image. Only a value that starts like a
    negative number is glued, so `--point --multimask` still reports the missing value.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in options and i + 1 < len(argv) and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def check_writable_dir(folder: Path, option: str = "--out") -> None:
    """Create `folder` if needed and write (then remove) a probe file there, so an unwritable
    output folder is reported before the image is decoded and the engine loaded."""
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".sam-inspect-probe-"):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise SamEngineError(f"{option} {folder}: cannot write results there ({why}); "
                             "choose a folder you can write to") from exc


MODEL_HELP = ("the model: a SAM id (vit_b, vit_h, ...) for --engine sam, or for --engine "
              "learned learned-base (the default), a tuned model NAME[@VERSION] (`sam-inspect "
              "tune --list`) or a model folder; with --engine auto either kind")

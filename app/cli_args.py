"""Parsing of command-line prompt values shared by `sam-inspect segment` and `sam-inspect-line`."""

from __future__ import annotations

from sam_engine.errors import PromptError


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

"""Which classes a zero-click run looks for, and what to say when nothing knows one.

Plain Python, no model imports: the torch-free line tool shares it with app.finding.plan.
"""

from __future__ import annotations

from collections.abc import Sequence

from sam_engine.errors import SamEngineError


class FindError(SamEngineError):
    """Nothing can look for a class asked for; the message says how to teach it."""


def how_to_teach(cls: str) -> str:
    return (f"train a finder on accepted {cls} defects (`sam-inspect tune --finder --db "
            f"STORE`), or teach it by one example (`sam-inspect teach --class {cls} --example "
            f"IMAGE --mask MASK`; in the GUI: accept one {cls}, then Inspect > Find similar)")


def choose_classes(known: Sequence[str], wanted: Sequence[str] | None = None,
                   recipe_classes: Sequence[str] | None = None,
                   what: str = "the finder") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(classes to look for, recipe classes left out). `wanted` given: each must be known
    (else FindError naming it); else the recipe's known classes (none known: FindError), else
    every known class."""
    known = tuple(known)
    listed = ", ".join(known) or "nothing"
    if wanted:
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise FindError(f"no trained finder knows {', '.join(map(repr, unknown))} "
                            f"({what} finds: {listed}); " + how_to_teach(unknown[0]))
        chosen = tuple(dict.fromkeys(wanted))
        rest = tuple(c for c in (recipe_classes or ()) if c not in chosen)
        return chosen, rest
    if recipe_classes is None:
        return known, ()
    chosen = tuple(c for c in recipe_classes if c in known)
    rest = tuple(c for c in recipe_classes if c not in known)
    if not chosen:
        raise FindError(f"{what} knows none of the recipe's classes "
                        f"({', '.join(recipe_classes)}; it finds: {listed}); "
                        + how_to_teach(recipe_classes[0] if recipe_classes else "CLASS"))
    return chosen, rest

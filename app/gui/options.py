"""Command-line options of `sam-inspect gui` (no Qt here: the CLI builds every parser at start)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from sam_engine.factory import ENGINE_NAMES

DEFAULT_PREFETCH = 2


@dataclass(frozen=True)
class GuiOptions:
    """What the window starts with; None means "the remembered setting, else the default"."""

    folder: Path | None = None
    recipe: Path | None = None
    db: str | None = None
    engine: str = "auto"
    model: str | None = None
    checkpoint: str | None = None
    operator: str = ""
    station: str = ""
    lot: str = ""
    prefetch: int = DEFAULT_PREFETCH

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GuiOptions:
        return cls(folder=args.folder, recipe=args.recipe, db=args.db, engine=args.engine,
                   model=args.model, checkpoint=args.checkpoint, operator=args.operator,
                   station=args.station, lot=args.lot, prefetch=args.prefetch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", type=Path,
                   help="folder of part photos (default: the last folder opened)")
    p.add_argument("--recipe", type=Path,
                   help="recipe TOML with the defect classes, calibration and tolerances "
                        "(default: the last one, or recipe.toml / recipes/*.toml in the folder)")
    p.add_argument("--db", help="inspection database file or SQLAlchemy URL "
                                "(default: inspections.db in the user data folder)")
    p.add_argument("--engine", choices=ENGINE_NAMES, default="auto")
    p.add_argument("--model", help="SAM model id (vit_b, vit_h, ...)")
    p.add_argument("--checkpoint", help="SAM checkpoint file")
    p.add_argument("--operator", default="", help="inspector's name, stored with each defect")
    p.add_argument("--station", default="", help="inspection station, stored with each image")
    p.add_argument("--lot", default="", help="production lot of the parts in the folder")
    p.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH,
                   help="embeddings computed ahead for the next images (default %(default)s)")

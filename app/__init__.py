"""sam-inspect application, built on sam_engine (never imported by it).

inspection/ (the domain: findings, measure, recipe, verdict, sampling, fiducial, evaluation),
outputs/ (atomic writes, mask PNGs and overlays, the COCO writer), store/ (the inspection
database), batch/ (batch mode, local and Ray), gui/ (PySide6 window), report/ (inspection
reports), shell/ (the CLI and its subcommands, the line tool, desktop entry, paths, about,
self-test). Nothing imports the shell; the domain imports neither Qt nor the store.
"""

__version__ = "0.1.0"

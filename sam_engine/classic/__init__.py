"""The default (classical) engine: no weights, OpenCV / scikit-image on a window per prompt."""

from sam_engine.classic.engine import ClassicEngine

__all__ = ["ClassicEngine"]

"""The default (classical) engine: no weights, OpenCV / scikit-image on a window per prompt."""

from .engine import ClassicEngine

__all__ = ["ClassicEngine"]

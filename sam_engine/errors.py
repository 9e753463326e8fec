"""Typed errors raised by sam_engine; each message names the file or value at fault and the fix."""

from __future__ import annotations


class SamEngineError(Exception):
    """Base class for every error sam_engine raises on purpose."""


class ImageError(SamEngineError, ValueError):
    """An image cannot be read or has an unsupported layout."""


class PromptError(SamEngineError, ValueError):
    """A prompt (point, box, mask) is invalid for the image it is applied to."""


class CheckpointError(SamEngineError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong architecture."""


class DownloadError(SamEngineError):
    """A model download failed (network, size or checksum)."""


class CacheError(SamEngineError):
    """An embedding cache entry cannot be stored (full disk, permissions)."""

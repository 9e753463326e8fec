"""Values returned by engines: image handles, masks, engine description."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EngineInfo:
    """Which engine is active, on what, and why; shown to users and stored with results."""

    name: str  # "sam" or "classic"
    model_id: str  # "vit_b", "vit_h", ... or the default engine's id
    device: str  # "cpu", "cuda", "mps"
    dtype: str  # "float32", "bfloat16", "float16"
    checkpoint: str | None = None  # file path, None for engines without weights
    checkpoint_sha256: str | None = None
    note: str = ""  # e.g. "no SAM checkpoint installed; using the classical default engine"
    # True: checkpoint_sha256 (always computed) matched the manifest / expected hash; False:
    # it did not or there was none (unverified); None: not checked (no weights, or unknown)
    checkpoint_verified: bool | None = None

    def describe(self) -> str:
        ckpt = f", checkpoint {self.checkpoint}" if self.checkpoint else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.name}:{self.model_id} on {self.device}/{self.dtype}{ckpt}{note}"


@dataclass
class ImageHandle:
    """An image whose embedding (or engine-specific features) is ready for predict().

    key: cache key (content hash + model id + preprocessing version).
    original_size: (H, W) of the image as given; input_size: (h, w) after resizing to the
    encoder's longest side. features: engine-private data (the embedding for SAM, the image
    itself for the classical engine); callers must not rely on its type.
    """

    key: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    features: Any = field(repr=False)
    from_cache: bool = False


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """An image made ready for an engine's encoder by `engine.prepare` (CPU only, thread safe).

    rgb: the uint8 (H, W, 3) image; digest: its content hash (image_io.image_digest);
    original_size / input_size as in ImageHandle. payload: engine-private encoder input made on
    the worker thread (resized + normalised pixels, or a pinned upload buffer), valid only for
    the engine kind named by `prepared_by`; other engines prepare `rgb` again.
    """

    rgb: np.ndarray = field(repr=False)
    digest: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    prepared_by: str = ""
    payload: Any = field(default=None, repr=False)


@dataclass(init=False)
class Masks:
    """Candidate masks for one decoder call.

    masks: bool (B, C, H, W) at the original image size; B = number of boxes (1 when none),
    C = candidates (3 with multimask output, else 1). Engines may give an `upsample` function
    instead of the masks: then each full-size mask is computed the first time it is asked for
    (mask(b, c), best(b), or all of them through .masks), so a caller that shows one candidate
    never pays for the others.
    scores: (B, C) float32 predicted IoU of each candidate.
    low_res_logits: (B, C, 256, 256) float32, to feed back as mask_input for refinement.
    """

    scores: np.ndarray
    low_res_logits: np.ndarray
    image_size: tuple[int, int]

    def __init__(
        self,
        masks: np.ndarray | None = None,
        scores: np.ndarray | None = None,
        low_res_logits: np.ndarray | None = None,
        *,
        image_size: tuple[int, int] | None = None,
        upsample: Callable[[int, int], np.ndarray] | None = None,
    ) -> None:
        if scores is None or low_res_logits is None:
            raise TypeError("Masks needs scores and low_res_logits")
        if masks is None and (upsample is None or image_size is None):
            raise TypeError("Masks needs either masks or upsample + image_size")
        self.scores = np.asarray(scores, dtype=np.float32)
        self.low_res_logits = low_res_logits
        self.image_size = tuple(masks.shape[-2:]) if masks is not None else tuple(image_size)
        self._all = masks
        self._one: dict[tuple[int, int], np.ndarray] = {}
        self._upsample = upsample

    @property
    def shape(self) -> tuple[int, int]:
        """(B, C): prompt batch entries x candidates."""
        return self.scores.shape

    def mask(self, b: int = 0, c: int = 0) -> np.ndarray:
        """Candidate c of batch entry b, bool (H, W)."""
        if self._all is not None:
            return self._all[b, c]
        if (b, c) not in self._one:
            self._one[(b, c)] = self._upsample(b, c)
        return self._one[(b, c)]

    @property
    def masks(self) -> np.ndarray:
        """All candidates, bool (B, C, H, W)."""
        if self._all is None:
            nb, nc = self.shape
            out = np.empty((nb, nc, *self.image_size), dtype=bool)
            for b in range(nb):
                for c in range(nc):
                    out[b, c] = self.mask(b, c)
            self._all, self._one = out, {}
        return self._all

    def best_index(self, b: int = 0) -> int:
        return int(np.argmax(self.scores[b]))

    def best(self, b: int = 0) -> np.ndarray:
        """The highest-scoring candidate mask of prompt batch entry b, bool (H, W)."""
        return self.mask(b, self.best_index(b))

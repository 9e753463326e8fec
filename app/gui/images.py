"""Images as the window needs them: the engine's RGB input, display data, pyramid, thumbnails.

No Qt here (the workers call it off the UI thread). 8-bit images are displayed from the very
array the engine gets (no copy); 16-bit PNG/TIFF keep their raw values for display so window/level
works on the real data, while the engine gets image_io's min-max stretch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sam_engine.image_io import IMAGE_SUFFIXES, image_digest, load_image, to_rgb8

PYRAMID_MAX_SIDE = 2048  # coarsest display level is at most this many pixels a side
THUMB_SIDE = 96
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def list_images(folder: str | Path) -> list[Path]:
    """The folder's image files (not recursive), sorted by name."""
    folder = Path(folder)
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name.lower(),
    )


@dataclass
class LoadedImage:
    """One image file, decoded.

    rgb: RGB uint8 (H, W, 3), the engine's input. display: what the canvas shows, uint8
    (H, W, 3) (the same array as rgb) or raw uint16 (H, W) / (H, W, 3). levels: display
    downsampled by 2 per level (levels[0] is display) until a side fits PYRAMID_MAX_SIDE, so a
    zoomed-out 8000x6000 image paints from a small level.
    """

    path: Path
    rgb: np.ndarray = field(repr=False)
    display: np.ndarray = field(repr=False)
    levels: list[np.ndarray] = field(repr=False)
    digest: str

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    @property
    def is16bit(self) -> bool:
        return self.display.dtype == np.uint16


def _maybe_16bit(path: Path) -> bool:
    """True when the file may hold more than 8 bits per sample (16-bit PNG, any TIFF)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return True
    if suffix == ".png":
        with path.open("rb") as f:
            head = f.read(25)
        return head.startswith(_PNG_SIGNATURE) and len(head) == 25 and head[24] == 16
    return False


def _raw16(path: Path) -> np.ndarray | None:
    """The file's uint16 samples as grey (H, W) or RGB (H, W, 3); None when not 16-bit."""
    raw = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if raw is None or raw.dtype != np.uint16:
        return None
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(raw)


def pyramid(image: np.ndarray, max_side: int = PYRAMID_MAX_SIDE) -> list[np.ndarray]:
    """[image, image/2, image/4, ...] (cv2 INTER_AREA) until the largest side <= max_side."""
    levels = [image]
    while max(levels[-1].shape[:2]) > max_side:
        h, w = levels[-1].shape[:2]
        levels.append(
            cv2.resize(levels[-1], (max(w // 2, 1), max(h // 2, 1)), interpolation=cv2.INTER_AREA)
        )
    return levels


def load_for_display(path: str | Path) -> LoadedImage:
    """Decode an image file for the window; raises sam_engine ImageError naming the file."""
    path = Path(path)
    rgb = load_image(path)
    display = rgb
    if _maybe_16bit(path):
        raw = _raw16(path)
        if raw is not None:
            display = raw
    return LoadedImage(path=path, rgb=rgb, display=display, levels=pyramid(display),
                       digest=image_digest(rgb))


def from_array(image: np.ndarray, path: str | Path = "<array>") -> LoadedImage:
    """A LoadedImage of an in-memory array (uint16 kept raw for display, like a 16-bit file)."""
    image = np.asarray(image)
    display = np.ascontiguousarray(image) if image.dtype == np.uint16 else None
    if display is not None and display.ndim == 3 and display.shape[2] == 1:
        display = display[:, :, 0]
    rgb = to_rgb8(image)
    display = rgb if display is None or display.ndim not in (2, 3) else display
    return LoadedImage(path=Path(path), rgb=rgb, display=display, levels=pyramid(display),
                       digest=image_digest(rgb))


def auto_window(raw: np.ndarray) -> tuple[float, float]:
    """(window, level) spanning the 0.5-99.5 percentiles of a 16-bit image (sampled)."""
    step = max(1, int(np.sqrt(raw.shape[0] * raw.shape[1] / 1e6)))  # about 1 M samples
    sample = raw[::step, ::step]
    lo, hi = np.percentile(sample, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max()) + 1.0
    return float(hi - lo), float(hi + lo) / 2.0


def window_lut(window: float, level: float) -> np.ndarray:
    """uint8 look-up table for uint16 values: [level - window/2, level + window/2] -> 0..255."""
    window = max(float(window), 1.0)
    lo = float(level) - window / 2.0
    values = (np.arange(65536, dtype=np.float32) - lo) * (255.0 / window)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def apply_window(raw: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 image of a uint16 one through a window_lut (same shape)."""
    return np.take(lut, raw)


def make_thumbnail(path: str | Path, side: int = THUMB_SIDE) -> np.ndarray:
    """RGB uint8 thumbnail with the longest side `side` (cv2.resize INTER_AREA)."""
    rgb = load_image(path)
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))

"""The learned engine's one preprocessing, in numpy: prompt -> crop windows -> network input.

The learned engine (see engine.py) segments each prompt on a square crop of the image around
it, resampled to `size` x `size`: a box prompt on the box plus a margin (each side stretched
independently, the aspect distortion bounded by max_aspect), a click on squares of several
sides centred on the positive clicks (one candidate per side), a refinement on the previous
mask's bounding box. The network input has IN_CHANNELS planes: the crop's RGB (normalised by
the crop's own mean and spread, so lighting does not matter), the box, the positive and the
negative clicks (Gaussian spots), the previous mask's probability, and where the crop lies
inside the image. The torch engine, the training loop and the torch-free ONNX runtime all take
these functions from here, so the three see the same pixels.

Windows are integer pixel rectangles [x0, x1) x [y0, y1) (they may reach outside the image:
that part is padded with the crop's mean and marked invalid); a crop is the rectangle resized
to size x size (cv2.INTER_AREA when shrinking, bilinear when enlarging), and a crop's logits go
back by the inverse resize onto the same rectangle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sam_engine.constants import LOW_RES_SIZE
from sam_engine.preprocess import preprocess_shape

VERSION = "crops-v1"  # bump when anything here changes what the network sees
IN_CHANNELS = 8  # R, G, B, box, positive clicks, negative clicks, previous mask, valid
OUTSIDE_LOGIT = -20.0  # logit of every pixel outside all windows


@dataclass(frozen=True)
class CropGeometry:
    """How windows are chosen; stored with every model (a model is trained for one geometry).

    box_margins: margin of a box window per candidate, as a share of the box side (the first
    is the single-output window); box_pad_px: extra pixels on every side. click_sides: window
    side per candidate as a share of the image's longer side (first = single output), at
    least min_side pixels. max_aspect: the longer window side is at most this many times the
    shorter. click_sigma: Gaussian radius of a click spot, in crop pixels.
    """

    size: int = 96
    box_margins: tuple[float, ...] = (0.2, 0.08, 0.5)
    box_pad_px: float = 3.0
    click_sides: tuple[float, ...] = (0.3, 0.12, 0.75)
    min_side: float = 24.0
    max_aspect: float = 4.0
    click_sigma: float = 2.0

    def to_dict(self) -> dict:
        return {"size": self.size, "box_margins": list(self.box_margins),
                "box_pad_px": self.box_pad_px, "click_sides": list(self.click_sides),
                "min_side": self.min_side, "max_aspect": self.max_aspect,
                "click_sigma": self.click_sigma}

    @classmethod
    def from_dict(cls, d: dict) -> CropGeometry:
        return cls(size=int(d["size"]), box_margins=tuple(float(v) for v in d["box_margins"]),
                   box_pad_px=float(d["box_pad_px"]),
                   click_sides=tuple(float(v) for v in d["click_sides"]),
                   min_side=float(d["min_side"]), max_aspect=float(d["max_aspect"]),
                   click_sigma=float(d["click_sigma"]))


@dataclass(frozen=True)
class Window:
    """An integer pixel rectangle [x0, x1) x [y0, y1) of the image (may reach outside it)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def to_crop(self, xy: np.ndarray, size: int) -> np.ndarray:
        """(N, 2) continuous image coordinates -> continuous crop coordinates."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.stack([(xy[:, 0] - self.x0) * size / self.width,
                         (xy[:, 1] - self.y0) * size / self.height], axis=1)


def _window(cx: float, cy: float, w: float, h: float, g: CropGeometry) -> Window:
    w, h = max(w, g.min_side), max(h, g.min_side)
    w, h = max(w, h / g.max_aspect), max(h, w / g.max_aspect)
    x0, y0 = math.floor(cx - w / 2), math.floor(cy - h / 2)
    x1, y1 = math.ceil(cx + w / 2), math.ceil(cy + h / 2)
    return Window(x0, y0, max(x1, x0 + 2), max(y1, y0 + 2))


def box_window(box: np.ndarray, margin: float, g: CropGeometry) -> Window:
    """The window of a box prompt (x0, y0, x1, y1 continuous) with a margin share."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    w = bw * (1 + 2 * margin) + 2 * g.box_pad_px
    h = bh * (1 + 2 * margin) + 2 * g.box_pad_px
    return _window((x0 + x1) / 2, (y0 + y1) / 2, w, h, g)


def click_window(points: np.ndarray, side_share: float, image_size: tuple[int, int],
                 g: CropGeometry) -> Window:
    """A square window centred on the positive clicks, side_share of the longer image side
    (at least min_side, and wide enough to hold every click with a margin)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    side = max(side_share * max(image_size), g.min_side)
    lo, hi = pts.min(0), pts.max(0)
    side = max(side, 1.5 * float((hi - lo).max()) + 8)
    c = (lo + hi) / 2
    return _window(float(c[0]), float(c[1]), side, side, g)


def mask_window(mask: np.ndarray, points: np.ndarray | None, g: CropGeometry) -> Window | None:
    """The box window around a previous mask (bool, full size) and any clicks; None if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if points is not None and len(points):
        p = np.asarray(points, np.float64).reshape(-1, 2)
        x0, y0 = min(x0, p[:, 0].min() - 2), min(y0, p[:, 1].min() - 2)
        x1, y1 = max(x1, p[:, 0].max() + 2), max(y1, p[:, 1].max() + 2)
    return box_window(np.array([x0, y0, x1, y1], np.float64), g.box_margins[0], g)


def prompt_windows(image_size: tuple[int, int], box: np.ndarray | None,
                   points: np.ndarray | None, labels: np.ndarray | None,
                   prev_mask: np.ndarray | None, n: int, g: CropGeometry) -> list[Window]:
    """The n candidate windows of one prompt (n = 1 or len of the geometry's candidates)."""
    if box is not None:
        return [box_window(box, m, g) for m in g.box_margins[:n]]
    pos = None
    if points is not None and labels is not None and len(points):
        pos = np.asarray(points)[np.asarray(labels) == 1]
    if prev_mask is not None:
        w = mask_window(prev_mask, points, g)
        if w is not None:
            return [w] * n
    if pos is None or not len(pos):
        pos = np.asarray(points).reshape(-1, 2)  # only negative clicks: centre on them
    return [click_window(pos, s, image_size, g) for s in g.click_sides[:n]]


def _crop_region(img: np.ndarray, win: Window, fill) -> np.ndarray:
    """The window's pixels, padded with `fill` where it reaches outside the image."""
    h, w = img.shape[:2]
    out_shape = (win.height, win.width) + img.shape[2:]
    out = np.empty(out_shape, img.dtype)
    out[...] = fill
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x1, w), min(win.y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - win.y0:sy1 - win.y0, sx0 - win.x0:sx1 - win.x0] = img[sy0:sy1, sx0:sx1]
    return out


def resize_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize with INTER_AREA when shrinking (thin lines survive), bilinear otherwise."""
    shrink = width < img.shape[1] or height < img.shape[0]
    return cv2.resize(img, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_image(rgb: np.ndarray, win: Window, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, size, size) float32 normalised crop and its (size, size) valid plane."""
    h, w = rgb.shape[:2]
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x1, w), min(win.y1, h)
    step = max(1, int(math.sqrt(max(sy1 - sy0, 0) * max(sx1 - sx0, 0) / 4096)))
    inside = rgb[sy0:sy1:step, sx0:sx1:step].reshape(-1, 3).astype(np.float32)
    mean = inside.mean(0) if inside.size else np.zeros(3, np.float32)
    std = float(inside.std()) if inside.size else 1.0
    region = _crop_region(rgb, win, np.round(mean).astype(np.uint8))
    crop = resize_to(region, size, size).astype(np.float32)
    crop = (crop - mean) / (std + 4.0)
    valid = np.zeros((win.height, win.width), np.float32)
    valid[sy0 - win.y0:sy1 - win.y0, sx0 - win.x0:sx1 - win.x0] = 1.0
    valid = cv2.resize(valid, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), valid


def crop_mask(mask: np.ndarray, win: Window, size: int) -> np.ndarray:
    """A full-size bool/float mask resampled into the window: float32 (size, size) in [0, 1]."""
    region = _crop_region(np.asarray(mask, np.float32), win, 0.0)
    return resize_to(region, size, size)


def _spots(xy_crop: np.ndarray, size: int, sigma: float) -> np.ndarray:
    plane = np.zeros((size, size), np.float32)
    if not len(xy_crop):
        return plane
    grid = np.arange(size, dtype=np.float32) + 0.5
    for x, y in xy_crop:
        gx = np.exp(-((grid - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((grid - y) ** 2) / (2 * sigma**2))
        np.maximum(plane, gy[:, None] * gx[None, :], out=plane)
    return plane


def prompt_planes(win: Window, size: int, box: np.ndarray | None, points: np.ndarray | None,
                  labels: np.ndarray | None, sigma: float) -> np.ndarray:
    """(3, size, size) float32: the box, the positive and the negative click planes."""
    out = np.zeros((3, size, size), np.float32)
    if box is not None:
        c = win.to_crop(np.asarray(box, np.float64).reshape(2, 2), size)
        grid = np.arange(size) + 0.5
        inx = (grid >= c[0, 0]) & (grid <= c[1, 0])
        iny = (grid >= c[0, 1]) & (grid <= c[1, 1])
        out[0] = iny[:, None] & inx[None, :]
    if points is not None and len(points):
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        lab = np.asarray(labels).reshape(-1)
        out[1] = _spots(win.to_crop(pts[lab == 1], size), size, sigma)
        out[2] = _spots(win.to_crop(pts[lab == 0], size), size, sigma)
    return out


def network_input(rgb: np.ndarray, win: Window, g: CropGeometry, box: np.ndarray | None,
                  points: np.ndarray | None, labels: np.ndarray | None,
                  prev_prob: np.ndarray | None) -> np.ndarray:
    """(IN_CHANNELS, size, size) float32 input of one window.

    prev_prob: the previous mask's probability in the window ((size, size) in [0, 1]), or None.
    """
    s = g.size
    crop, valid = crop_image(rgb, win, s)
    planes = prompt_planes(win, s, box, points, labels, g.click_sigma)
    prev = np.zeros((1, s, s), np.float32) if prev_prob is None else prev_prob[None]
    return np.concatenate([crop, planes, prev.astype(np.float32), valid[None]], axis=0)


# ------------------------------------------------------------------ low-res (SAM) frame
def low_res_scale(image_size: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy): image pixels -> SAM's 256 x 256 low-res frame (longest side 1024, / 4)."""
    h, w = image_size
    nh, nw = preprocess_shape(h, w)
    q = LOW_RES_SIZE / 1024
    return nw / w * q, nh / h * q


def _crop_to_low_res(win: Window, size: int, image_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine: crop pixel index -> low-res pixel index."""
    qx, qy = low_res_scale(image_size)
    ax, ay = qx * win.width / size, qy * win.height / size
    return np.array([[ax, 0.0, qx * win.x0 + 0.5 * ax - 0.5],
                     [0.0, ay, qy * win.y0 + 0.5 * ay - 0.5]], np.float64)


def logits_to_low_res(logits: np.ndarray, win: Window, image_size: tuple[int, int]) -> np.ndarray:
    """A window's (size, size) logits in SAM's (256, 256) low-res frame (OUTSIDE_LOGIT beyond
    the window and in the padding)."""
    size = logits.shape[-1]
    m = _crop_to_low_res(win, size, image_size)
    out = cv2.warpAffine(np.asarray(logits, np.float32), m, (LOW_RES_SIZE, LOW_RES_SIZE),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=OUTSIDE_LOGIT)
    h, w = image_size
    nh, nw = preprocess_shape(h, w)
    out[math.ceil(nh / 4):, :] = OUTSIDE_LOGIT
    out[:, math.ceil(nw / 4):] = OUTSIDE_LOGIT
    return out


def low_res_to_crop(low_res: np.ndarray, win: Window, size: int,
                    image_size: tuple[int, int]) -> np.ndarray:
    """SAM-frame (256, 256) logits -> the window's (size, size) logits."""
    m = cv2.invertAffineTransform(_crop_to_low_res(win, size, image_size))
    return cv2.warpAffine(np.asarray(low_res, np.float32).reshape(LOW_RES_SIZE, LOW_RES_SIZE),
                          m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=OUTSIDE_LOGIT)


def low_res_to_mask(low_res: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """SAM-frame (256, 256) logits -> a full-size bool mask (bilinear, threshold 0)."""
    h, w = image_size
    nh, nw = preprocess_shape(h, w)
    lr = np.asarray(low_res, np.float32).reshape(LOW_RES_SIZE, LOW_RES_SIZE)
    up = cv2.resize(lr, (1024, 1024), interpolation=cv2.INTER_LINEAR)[:nh, :nw]
    return cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR) > 0


def logits_to_image(logits: np.ndarray, win: Window, image_size: tuple[int, int]) -> np.ndarray:
    """A window's (size, size) logits -> full-size float32 logits (OUTSIDE_LOGIT elsewhere)."""
    h, w = image_size
    out = np.full((h, w), OUTSIDE_LOGIT, np.float32)
    back = cv2.resize(np.asarray(logits, np.float32), (win.width, win.height),
                      interpolation=cv2.INTER_LINEAR)
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x1, w), min(win.y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0:sy1, sx0:sx1] = back[sy0 - win.y0:sy1 - win.y0, sx0 - win.x0:sx1 - win.x0]
    return out

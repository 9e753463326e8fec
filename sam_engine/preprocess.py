"""The one preprocessing of every backend, in numpy (the torch-free line runtime imports it).

SAM's encoder input: the image resized so its longest side is IMG_SIZE (preprocess_shape, the
geometry of segment_anything's ResizeLongestSide: rounded half up), normalised per RGB channel
in the 0..255 scale ((x - mean) / std, `normalise`), then zero-padded at the bottom/right to
IMG_SIZE x IMG_SIZE (`pad_widths`: zeros after normalising, as Sam.preprocess). Prompt
coordinates scale by new/old size per axis (apply_coords, apply_boxes). The PyTorch engine
(sam.backend), the device input batch (encoders.input), the ONNX graphs (onnx.graphs, in-graph
normalisation and padding) and the line runtime (onnx.runtime) all take these from here.

The pixels are resampled with PIL's antialiased bilinear filter at that size: on the torch side
through torchvision, as segment_anything does (encoders.input.resize_cpu); in the runtime by
resize_longest, which reproduces it (horizontal pass then vertical, 8-bit between passes,
22-bit fixed-point weights), so the line runtime feeds the encoder the same pixels as the torch
engine (tests/test_onnx_runtime.py checks equality). Written by hand because OpenCV
has no antialiased bilinear resize matching PIL's (INTER_LINEAR does not antialias, INTER_AREA
uses a box filter), and Pillow is not a line-controller dependency.
"""

from __future__ import annotations

import numpy as np

from sam_engine.constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD

_PRECISION_BITS = 32 - 8 - 2  # PIL's ImagingResample fixed-point precision
# the normalisation constants as float32 per RGB channel (shape (3,): channels last)
MEAN = np.asarray(PIXEL_MEAN, np.float32)
STD = np.asarray(PIXEL_STD, np.float32)
MEAN.flags.writeable = STD.flags.writeable = False


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """(h, w) with the longest side scaled to long_side (as ResizeLongestSide)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def normalise(pixels, mean=MEAN, std=STD):
    """(pixels - mean) / std: RGB in the 0..255 scale to the encoder's scale (the rule;
    encoder_input applies it in place). Plain arithmetic, so it serves numpy arrays (channels
    last with the defaults) and torch tensors (pass mean and std as tensors shaped for the
    layout, e.g. encoders.input.mean_std) alike."""
    return (pixels - mean) / std


def pad_widths(h, w, side: int = IMG_SIZE):
    """(bottom, right): the zero rows and columns that pad an (h, w) resized image to
    side x side. Plain arithmetic, so traced sizes stay dynamic in the ONNX graphs."""
    return side - h, side - w


def encoder_input(resized: np.ndarray, side: int = IMG_SIZE) -> np.ndarray:
    """A resized RGB uint8 image (h, w, 3) -> the encoder's input (3, side, side) float32:
    normalised, then zero-padded at the bottom/right (the same values as Sam.preprocess)."""
    h, w = resized.shape[:2]
    bottom, right = pad_widths(h, w, side)
    if bottom < 0 or right < 0:
        raise ValueError(f"resized image {h}x{w} is larger than the encoder input {side}")
    out = np.zeros((3, side, side), np.float32)  # the padding: zeros after normalising
    x = out[:, :h, :w]
    x[...] = resized.transpose(2, 0, 1)
    x -= MEAN[:, None, None]  # normalise in place: half the time of a padded copy
    x /= STD[:, None, None]
    return out


def apply_coords(coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) xy in original pixels -> the resized frame, float32."""
    h, w = original_size
    nh, nw = preprocess_shape(h, w)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= nw / w
    out[..., 1] *= nh / h
    return out.astype(np.float32)


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(B, 4) xyxy in original pixels -> the resized frame, float32."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    return apply_coords(b, original_size).reshape(-1, 4)


def _coeffs(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's bilinear (triangle) filter taps: source indices (n_out, K) and fixed-point weights."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = fscale  # bilinear filter support 1.0, widened when downscaling (antialias)
    centers = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    k = int((xmax - xmin).max())
    idx = xmin[:, None] + np.arange(k)[None]
    valid = idx < xmax[:, None]
    w = np.clip(1.0 - np.abs((idx - centers[:, None] + 0.5) / fscale), 0.0, None) * valid
    w = w / w.sum(1, keepdims=True)
    fixed = np.floor(w * (1 << _PRECISION_BITS) + 0.5).astype(np.int64)  # weights are >= 0
    return np.minimum(idx, n_in - 1), fixed


def _resample(img: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    idx, fixed = _coeffs(img.shape[axis], n_out)
    acc = np.full(
        img.shape[:axis] + (n_out,) + img.shape[axis + 1 :], 1 << (_PRECISION_BITS - 1), np.int64
    )
    shape = [1] * img.ndim
    shape[axis] = n_out
    for t in range(idx.shape[1]):  # a few taps; each a vectorised gather over the whole image
        acc += np.take(img, idx[:, t], axis=axis).astype(np.int64) * fixed[:, t].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_longest(rgb: np.ndarray, long_side: int = IMG_SIZE) -> np.ndarray:
    """RGB uint8 (H, W, 3) resized so its longest side is long_side, like apply_image."""
    h, w = rgb.shape[:2]
    nh, nw = preprocess_shape(h, w, long_side)
    out = rgb
    if nw != w:
        out = _resample(out, nw, axis=1)
    if nh != h:
        out = _resample(out, nh, axis=0)
    return np.ascontiguousarray(out)


def pad_to_square(resized: np.ndarray, side: int = IMG_SIZE) -> np.ndarray:
    """Zero-pad a resized (h, w, 3) uint8 image at the bottom/right to (side, side, 3) (the
    input of encoder.onnx, which normalises and zeroes the padding itself)."""
    bottom, right = pad_widths(*resized.shape[:2], side)
    return np.pad(resized, ((0, bottom), (0, right), (0, 0)))

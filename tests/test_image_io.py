"""Image conversion rules, file loading and its errors, digests."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from sam_engine.errors import ImageError
from sam_engine.image_io import IMAGE_SUFFIXES, image_digest, load_image, to_rgb8


def _rgb_pattern(h: int = 12, w: int = 16) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.arange(w, dtype=np.uint8) * 10
    rgb[..., 1] = (np.arange(h, dtype=np.uint8) * 15)[:, None]
    rgb[..., 2] = 200
    return rgb


# ------------------------------------------------------------------ to_rgb8
def test_uint8_rgb_is_returned_unchanged():
    rgb = _rgb_pattern()
    out = to_rgb8(rgb)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert out.flags.c_contiguous and np.array_equal(out, rgb)


def test_non_contiguous_input_becomes_contiguous():
    rgb = _rgb_pattern()[:, ::2]
    out = to_rgb8(rgb)
    assert out.flags.c_contiguous and np.array_equal(out, rgb)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 1)])
def test_grayscale_is_replicated(shape):
    gray = np.arange(20, dtype=np.uint8).reshape(shape)
    out = to_rgb8(gray)
    assert out.shape == (4, 5, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], gray.reshape(4, 5))


def test_rgba_drops_alpha():
    rgba = np.dstack([_rgb_pattern(), np.full((12, 16), 7, np.uint8)])
    out = to_rgb8(rgba)
    assert out.shape == (12, 16, 3) and np.array_equal(out, rgba[..., :3])


def test_uint16_is_stretched_over_its_actual_range():
    img = np.array([[1000, 2000], [3000, 4000]], np.uint16)
    out = to_rgb8(img)[..., 0]
    assert out.tolist() == [[0, 85], [170, 255]]


def test_12_bit_data_in_uint16_uses_full_range():
    img = np.array([[0, 4095]], np.uint16)
    assert to_rgb8(img)[..., 0].tolist() == [[0, 255]]


def test_uint16_stretch_is_shared_by_channels():
    img = np.zeros((1, 1, 3), np.uint16)
    img[0, 0] = (100, 150, 300)
    assert to_rgb8(img)[0, 0].tolist() == [0, 64, 255]


def test_constant_uint16_maps_to_zero():
    assert not to_rgb8(np.full((3, 3), 777, np.uint16)).any()


def test_float_unit_range_is_scaled_by_255():
    img = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert to_rgb8(img)[..., 0].tolist() == [[0, 128, 255]]


def test_float_other_range_is_min_max_stretched():
    img = np.array([[-1.0, 0.0, 3.0]], np.float64)
    assert to_rgb8(img)[..., 0].tolist() == [[0, 64, 255]]


def test_float_nan_and_inf_become_zero():
    img = np.array([[np.nan, 0.25, np.inf, 1.0]], np.float32)
    assert to_rgb8(img)[..., 0].tolist() == [[0, 64, 0, 255]]
    img2 = np.array([[np.nan, 10.0, 20.0]], np.float32)
    assert to_rgb8(img2)[..., 0].tolist() == [[0, 0, 255]]


def test_bool_maps_to_0_and_255():
    img = np.array([[True, False]])
    out = to_rgb8(img)
    assert out.dtype == np.uint8 and out[..., 1].tolist() == [[255, 0]]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.int64, np.uint32, np.int8])
def test_int_within_0_255_is_cast(dtype):
    img = np.array([[0, 5, 127]], dtype)
    assert to_rgb8(img)[..., 2].tolist() == [[0, 5, 127]]


@pytest.mark.parametrize("values, expected", [([-10, 0, 245], [0, 10, 255]),
                                               ([0, 500, 1000], [0, 128, 255])])
def test_int_outside_0_255_is_min_max_stretched(values, expected):
    img = np.array([values], np.int32)
    assert to_rgb8(img)[..., 0].tolist() == [expected]


@pytest.mark.parametrize(
    "image, fragment",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5,), np.uint8), "2 or 3 dimensions"),
        (np.zeros((2, 5, 5, 3), np.uint8), "2 or 3 dimensions"),
        (np.zeros((5, 5, 2), np.uint8), "2 channels"),
        (np.zeros((5, 5, 5), np.uint8), "5 channels"),
        (np.full((3, 3), np.nan, np.float32), "no finite"),
        (np.zeros((3, 3), np.complex64), "complex64"),
        (np.array([["a", "b"]]), "cannot be converted"),
    ],
)
def test_invalid_arrays_are_rejected_with_shape_and_dtype(image, fragment):
    with pytest.raises(ImageError) as info:
        to_rgb8(image)
    msg = str(info.value)
    assert fragment in msg and str(tuple(image.shape)) in msg and "accepted" in msg


# -------------------------------------------------------------- load_image
def test_png_round_trip_is_rgb(tmp_path):
    rgb = _rgb_pattern()
    path = tmp_path / "a.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_image(path), rgb)


def test_rgba_png_loses_alpha_keeps_colour(tmp_path):
    rgb = _rgb_pattern()
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full(rgb.shape[:2], 90, np.uint8)])
    path = tmp_path / "rgba.png"
    assert cv2.imwrite(str(path), bgra)
    assert np.array_equal(load_image(path), rgb)


def test_grayscale_png_is_replicated(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = tmp_path / "g.png"
    assert cv2.imwrite(str(path), gray)
    out = load_image(path)
    assert out.shape == (6, 8, 3) and np.array_equal(out[..., 1], gray)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_16_bit_files_are_stretched(tmp_path, suffix):
    gray16 = np.array([[1000, 2000], [3000, 4000]], np.uint16)
    bgr16 = np.dstack([gray16, gray16, gray16])
    bgr16[0, 0] = (4000, 1000, 1000)  # blue in BGR order
    path = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(path), bgr16)
    out = load_image(path)
    assert out.dtype == np.uint8
    assert out[..., 1].tolist() == [[0, 85], [170, 255]]
    assert out[0, 0].tolist() == [0, 0, 255]  # RGB order: blue last


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    data = buf.tobytes()
    # Minimal EXIF APP1 segment: one IFD entry, Orientation (0x0112) = 6 (rotate 90 CW).
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0))
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    assert load_image(path).shape == (40, 20, 3)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="not found") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as info:
        load_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(suffix, img)
    assert ok
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_garbage_with_image_suffix_is_corrupt(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(os.urandom(64) + b"not an image")
    with pytest.raises(ImageError, match="corrupt") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageError, match="unsupported image format .txt") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_load_image_accepts_str_paths(tmp_path):
    path = tmp_path / "s.bmp"
    assert cv2.imwrite(str(path), np.zeros((3, 4, 3), np.uint8))
    assert load_image(str(path)).shape == (3, 4, 3)


def test_image_suffixes():
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


# ------------------------------------------------------------------ digest
def test_digest_depends_on_pixels_shape_and_dtype():
    a = _rgb_pattern()
    d = image_digest(a)
    assert len(d) == 32 and d == image_digest(a.copy())
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert image_digest(b) != d
    assert image_digest(a.reshape(16, 12, 3)) != d
    assert image_digest(a.view(np.int8)) != d


def test_digest_of_non_contiguous_equals_its_copy():
    a = _rgb_pattern()[:, ::2]
    assert image_digest(a) == image_digest(np.ascontiguousarray(a))


def test_real_defect_images_load_when_present():
    root = Path(os.environ.get("SAM_INSPECT_DEFECTS_DIR")
                or Path(__file__).resolve().parents[2] / "shared" / "data" / "defects")
    if not root.is_dir():
        pytest.skip(f"defect images not found at {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:3]
    if not files:
        pytest.skip(f"no images under {root}")
    for p in files:
        rgb = load_image(p)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# ------------------------------------------------------------------ pixel limit
def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h pixels, with one tiny (invalid) IDAT and an IEND: the size
    check must refuse it from the header, before any decode is tried."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_header_dimensions_match_the_decoded_size(tmp_path, suffix):
    from sam_engine.image_io import header_size

    path = tmp_path / f"p{suffix}"
    assert cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
    assert header_size(path.read_bytes()) == (53, 37)


def test_header_dimensions_of_a_16_bit_grayscale_tiff(tmp_path):
    from sam_engine.image_io import header_size

    path = tmp_path / "p16.tif"
    assert cv2.imwrite(str(path), np.zeros((70, 90), np.uint16))
    assert header_size(path.read_bytes()) == (90, 70)


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(ImageError, match=r"huge\.png.*20000x20000.*400\.0 MP.*100 MP"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.jpg"
    cv2.imwrite(str(path), np.zeros((40, 50, 3), np.uint8))
    assert load_image(path).shape == (40, 50, 3)
    with pytest.raises(ImageError, match="SAM_INSPECT_MAX_PIXELS"):
        load_image(path, max_pixels=1000)
    monkeypatch.setenv("SAM_INSPECT_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match=r"small\.jpg"):
        load_image(path)
    monkeypatch.setenv("SAM_INSPECT_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="SAM_INSPECT_MAX_PIXELS"):
        load_image(path)


def test_header_dimensions_of_damaged_or_unknown_headers_are_unknown():
    from sam_engine.image_io import header_size

    assert header_size(b"\x89PNG\r\n\x1a\n") is None  # cut before IHDR
    assert header_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None  # no frame header yet
    assert header_size(b"II*\x00\xff\xff\xff\xff") is None  # IFD offset past the end
    assert header_size(b"GIF89a") is None
    # an OS/2 bitmap keeps 16-bit sizes in a 12-byte header
    os2 = b"BM" + b"\0" * 12 + struct.pack("<IHHHH", 12, 70, 50, 1, 24)
    assert header_size(os2) == (70, 50)

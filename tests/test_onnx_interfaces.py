"""Exports in other tools' conventions, checked by re-implementing their calling sequences.

* decoder_meta.onnx: Meta's ONNX decoder interface (segment_anything.utils.onnx.SamOnnxModel,
  return_single_mask=True, as scripts/export_onnx_model.py writes it), used the way Meta's
  notebook uses it (SamPredictor embeddings, ResizeLongestSide.apply_coords, orig_im_size =
  (H, W)), on six aspect ratios, against SamPredictor.
* encoder_float.onnx: samexporter's / X-AnyLabeling's encoder convention (input_image, float32
  H x W x 3 RGB 0..255, normalisation and padding inside the graph), in their calling sequence
  (cv2.warpAffine into a fixed 684 x 1024 canvas, points through the same matrix, decoder with
  orig_im_size = the canvas, masks warped back), and fed Meta's resized image directly.
* x-anylabeling.yaml: X-AnyLabeling's model config for those two files.

The sequences below are written from the tools' documented behaviour, not copied from them.
Reference masks come from SamPredictor with the prompt tokens the ONNX decoder sees and Meta's
mask choice (SamOnnxModel.select_masks): with more than 2 prompt points (padding included) the
single-mask output, otherwise the best of the three multimask outputs by predicted IoU.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.onnx import SamOnnxModel
from segment_anything.utils.transforms import ResizeLongestSide

from sam_engine.onnx import export as onnx_export
from sam_engine.onnx import trace as onnx_trace
from sam_engine.onnx.manifest import OnnxManifest
from tests.sam_factory import tiny_sam

SEED = 5
# (H, W): portrait 3:2, landscape 3:4, wide 3:1, square, large portrait 4:3, small 9:16
SIZES = [(900, 600), (600, 800), (300, 900), (512, 512), (2000, 1500), (90, 160)]
MIN_IOU = 0.99
CANVAS = (684, 1024)  # samexporter's and X-AnyLabeling's fixed encoder input (H, W)


@pytest.fixture(scope="module")
def sam():
    return tiny_sam(SEED)


@pytest.fixture(scope="module")
def export(sam):
    out = Path(tempfile.mkdtemp(prefix="sam_onnx_iface_"))
    yield onnx_export.export_onnx(
        sam, "tiny", out, checkpoint_sha256="0" * 64,
        options=onnx_export.ExportOptions(formats=("samexporter", "x-anylabeling"),
                                          verify_cases=2))
    shutil.rmtree(out, ignore_errors=True)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A blocky random RGB uint8 image (features the tiny encoder can tell apart)."""
    rng = np.random.default_rng(seed)
    h, w = size
    cells = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(cells, np.ones((10, 10, 1), np.uint8))[:h, :w])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _prompts(size: tuple[int, int], seed: int, n: int = 2):
    """n of (points, labels, box) in image pixels, of the kinds one click, click + negative
    click, a box, a box with a click; the image sizes take turns (all kinds over SIZES)."""
    rng = np.random.default_rng(seed)
    h, w = size
    pts = rng.uniform((0.2 * w, 0.2 * h), (0.8 * w, 0.8 * h), size=(2, 2))
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    kinds = [(pts[:1], np.array([1]), None), (pts, np.array([1, 0]), None),
             (None, None, box), (pts[:1], np.array([1]), box)]
    j = SIZES.index(size) if size in SIZES else 0
    return [kinds[(j + i) % 4] for i in range(n)]


def _reference(pred: SamPredictor, points, labels, box, n_onnx_points: int, mask_input=None):
    """SamPredictor's logits (H, W) and low-res logits of the mask Meta's decoder returns."""
    multi = n_onnx_points <= 2
    masks, scores, low = pred.predict(point_coords=points, point_labels=labels, box=box,
                                      mask_input=mask_input, multimask_output=multi,
                                      return_logits=True)
    k = int(np.argmax(scores)) if multi else 0
    return masks[k], low[k]


def _decode(s: ort.InferenceSession, emb, coords, labels, orig_size, mask_input=None):
    has = mask_input is not None
    return s.run(None, {
        "image_embeddings": emb,
        "point_coords": coords[None].astype(np.float32),
        "point_labels": labels[None].astype(np.float32),
        "mask_input": (mask_input[None] if has else np.zeros((1, 1, 256, 256))).astype(
            np.float32),
        "has_mask_input": np.array([float(has)], np.float32),
        "orig_im_size": np.array(orig_size, np.float32),
    })


def _meta_notebook_inputs(points, labels, box, size, transform):
    """Meta's notebook: the points, then the box corners (labels 2, 3), or a padding point
    (0, 0) with label -1 when there is no box; all through ResizeLongestSide.apply_coords."""
    coords, labs = [], []
    if points is not None:
        coords.append(points)
        labs.append(labels)
    if box is not None:
        coords.append(box.reshape(2, 2))
        labs.append(np.array([2, 3]))
    else:
        coords.append(np.zeros((1, 2)))
        labs.append(np.array([-1]))
    coords = transform.apply_coords(np.concatenate(coords).astype(np.float64), size)
    return coords, np.concatenate(labs)


# ------------------------------------------------------------------ Meta's decoder interface
def test_meta_decoder_has_meta_exports_interface(export):
    f = export.manifest.find("decoder_meta")
    assert [(t.name, t.dtype, t.shape) for t in f.inputs] == [
        ("image_embeddings", "float32", (1, 256, 64, 64)),
        ("point_coords", "float32", (1, "num_points", 2)),
        ("point_labels", "float32", (1, "num_points")),
        ("mask_input", "float32", (1, 1, 256, 256)),
        ("has_mask_input", "float32", (1,)),
        ("orig_im_size", "float32", (2,))]
    assert [t.name for t in f.outputs] == ["masks", "iou_predictions", "low_res_masks"]
    s = _session(export.out_dir / f.path)
    emb = np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32)
    masks, iou, low = _decode(s, emb, np.array([[10.0, 20.0], [0, 0]]), np.array([1, -1]),
                              (333, 777))
    assert masks.shape == (1, 1, 333, 777) and iou.shape == (1, 1)
    assert low.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_meta_notebook_flow_matches_sam_predictor(export, sam, size):
    s = _session(export.out_dir / "decoder_meta.onnx")
    pred = SamPredictor(sam)
    with torch.no_grad():
        pred.set_image(_image(size, size[0]))
    emb = pred.get_image_embedding().numpy()
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    for points, labels, box in _prompts(size, size[1]):
        coords, labs = _meta_notebook_inputs(points, labels, box, size, transform)
        masks, _, low = _decode(s, emb, coords, labs, size)
        assert masks.shape == (1, 1, *size)
        ref, ref_low = _reference(pred, points, labels, box, len(labs))
        assert _iou(masks[0, 0] > 0, ref > 0) >= MIN_IOU, (size, points, box)
        # the notebook's refinement step: the low-res logits fed back as mask_input
        masks2, _, _ = _decode(s, emb, coords, labs, size, mask_input=low[0])
        ref2, _ = _reference(pred, points, labels, box, len(labs), mask_input=low[0])
        assert _iou(masks2[0, 0] > 0, ref2 > 0) >= MIN_IOU, (size, points, box)
        assert np.abs(low[0, 0] - ref_low).max() < 1e-3


def test_verification_rejects_a_decoder_with_a_fixed_crop(sam, tmp_path):
    """Meta's SamOnnxModel traced as is by this torch keeps the dummy image's crop; the
    export's own check must catch that (it checks several aspect ratios)."""
    dummy = (torch.randn(1, 256, 64, 64), torch.randint(0, 1024, (1, 5, 2)).float(),
             torch.randint(0, 4, (1, 5)).float(), torch.randn(1, 1, 256, 256),
             torch.tensor([1.0]), torch.tensor([600.0, 800.0]))
    bad = onnx_trace.trace(SamOnnxModel(sam, return_single_mask=True), dummy,
                             ("image_embeddings", *onnx_export.PROMPT_INPUTS, "orig_im_size"),
                             ("masks", "iou_predictions", "low_res_masks"),
                             {"point_coords": {1: "num_points"},
                              "point_labels": {1: "num_points"}}, 17)
    path = tmp_path / "decoder_meta.onnx"
    onnx_export._save(bad, path, onnx_export.EXTERNAL_DATA_BYTES)
    opts = onnx_export.ExportOptions(verify_cases=2)
    (v,) = onnx_export.verify_exports(sam, "tiny", [(path, "decoder_meta", False, ())], opts)
    assert not v.passed and v.min_mask_iou < 0.9


def test_export_verifies_meta_decoder_on_several_aspect_ratios(export):
    v = {r.path: r for r in export.manifest.verification}
    meta = v["decoder_meta.onnx"]
    assert meta.passed and meta.min_mask_iou >= MIN_IOU
    assert meta.cases >= 2 * 2 * len(onnx_export.VERIFY_SIZES)  # 2 prompts, each refined
    assert len({h / w for h, w in onnx_export.VERIFY_SIZES}) >= 5
    assert v["encoder_float.onnx"].passed


# ------------------------------------------------------------------ samexporter / X-AnyLabeling
def test_float_encoder_has_the_tools_interface(export):
    f = export.manifest.find("encoder_float")
    assert [(t.name, t.dtype, t.shape) for t in f.inputs] == [
        ("input_image", "float32", ("image_height", "image_width", 3))]
    assert [(t.name, t.shape) for t in f.outputs] == [("image_embeddings", (1, 256, 64, 64))]
    roles = {x.role for x in export.manifest.files}
    assert roles == {"decoder_meta", "encoder_float"}


def _tool_encode(enc: ort.InferenceSession, image: np.ndarray):
    """The tools' encode(): scale to fit the canvas, warp into it, feed float32 HWC RGB."""
    h, w = image.shape[:2]
    scale = min(CANVAS[1] / w, CANVAS[0] / h)
    matrix = np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
    canvas = cv2.warpAffine(image, matrix[:2], (CANVAS[1], CANVAS[0]), flags=cv2.INTER_LINEAR)
    name = enc.get_inputs()[0].name
    return enc.run(None, {name: canvas.astype(np.float32)})[0], matrix, canvas


def _tool_points(points, labels, box):
    """The tools' marks: points, then the box corners (2, 3), then always a padding point."""
    coords, labs = [], []
    if points is not None:
        coords.append(points)
        labs.append(labels)
    if box is not None:
        coords.append(box.reshape(2, 2))
        labs.append(np.array([2, 3]))
    coords.append(np.zeros((1, 2)))
    labs.append(np.array([-1]))
    return np.concatenate(coords), np.concatenate(labs)


def _tool_decode(dec, emb, matrix, size, points, labels, box):
    """The tools' run_decoder(): points scaled from the canvas to the 1024 frame (identity for
    684 x 1024), then through the matrix; orig_im_size = the canvas; masks warped back."""
    coords, labs = _tool_points(points, labels, box)
    long = 1024 / max(CANVAS)
    new_h, new_w = int(CANVAS[0] * long + 0.5), int(CANVAS[1] * long + 0.5)
    coords = coords * (new_w / CANVAS[1], new_h / CANVAS[0])
    coords = (np.concatenate([coords, np.ones((len(coords), 1))], 1) @ matrix.T)[:, :2]
    masks, _, _ = _decode(dec, emb, coords, labs, CANVAS)
    inv = np.linalg.inv(matrix)
    back = cv2.warpAffine(masks[0, 0], inv[:2], (size[1], size[0]), flags=cv2.INTER_LINEAR)
    return back, len(labs)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_x_anylabeling_and_samexporter_sequence_matches_sam_predictor(export, sam, size):
    """Reference: SamPredictor on the canvas the tools encode (their own resampling of the
    image is theirs), with the same points; its masks warped back the same way."""
    enc = _session(export.out_dir / "encoder_float.onnx")
    dec = _session(export.out_dir / "decoder_meta.onnx")
    image = _image(size, size[0] + 1)
    emb, matrix, canvas = _tool_encode(enc, image)
    pred = SamPredictor(sam)
    with torch.no_grad():
        pred.set_image(canvas)
    assert np.abs(emb - pred.get_image_embedding().numpy()).max() < 1e-3
    inv = np.linalg.inv(matrix)
    for points, labels, box in _prompts(size, size[1] + 1):
        got, n = _tool_decode(dec, emb, matrix, size, points, labels, box)
        scale = matrix[0, 0]
        # the same prompt tokens (their order does not matter to the decoder): SamPredictor
        # adds the padding point itself only when there is no box
        if box is None:
            ref, _ = _reference(pred, points * scale, labels, None, n)
        else:
            pad, no = np.zeros((1, 2)), np.array([-1])
            p = pad if points is None else np.concatenate([points * scale, pad])
            lab = no if labels is None else np.concatenate([labels, no])
            ref, _ = _reference(pred, p, lab, box * scale, n)
        ref = cv2.warpAffine(ref, inv[:2], (size[1], size[0]), flags=cv2.INTER_LINEAR)
        assert got.shape == size
        assert _iou(got > 0, ref > 0) >= MIN_IOU, (size, points, box)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_float_encoder_fed_meta_resize_matches_sam_predictor(export, sam, size):
    """samexporter's encoder takes any H x W up to 1024: fed ResizeLongestSide.apply_image's
    image it gives SamPredictor's embedding, and the Meta decoder its masks on the original."""
    enc = _session(export.out_dir / "encoder_float.onnx")
    dec = _session(export.out_dir / "decoder_meta.onnx")
    image = _image(size, size[0] + 2)
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    emb = enc.run(None, {"input_image": transform.apply_image(image).astype(np.float32)})[0]
    pred = SamPredictor(sam)
    with torch.no_grad():
        pred.set_image(image)
    assert np.abs(emb - pred.get_image_embedding().numpy()).max() < 1e-3
    for points, labels, box in _prompts(size, size[1] + 2, n=1):
        coords, labs = _meta_notebook_inputs(points, labels, box, size, transform)
        masks, _, _ = _decode(dec, emb, coords, labs, size)
        ref, _ = _reference(pred, points, labels, box, len(labs))
        assert _iou(masks[0, 0] > 0, ref > 0) >= MIN_IOU, (size, points, box)


def test_x_anylabeling_config_names_the_exported_files(export):
    yaml = pytest.importorskip("yaml")
    path = export.out_dir / onnx_export.X_ANYLABELING_CONFIG
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    # X-AnyLabeling's SegmentAnything model: required config names, and the sizes it reads
    for key in ("type", "name", "display_name", "encoder_model_path", "decoder_model_path"):
        assert cfg[key], key
    assert cfg["type"] == "segment_anything"
    assert (cfg["input_size"], cfg["max_width"], cfg["max_height"]) == (1024, 1024, 682)
    # relative paths resolve against the config's folder
    assert (path.parent / cfg["encoder_model_path"]).samefile(
        export.out_dir / "encoder_float.onnx")
    assert (path.parent / cfg["decoder_model_path"]).samefile(
        export.out_dir / "decoder_meta.onnx")
    assert "tiny" in cfg["name"] and "tiny" in cfg["display_name"]
    assert OnnxManifest.load(export.out_dir).find("encoder_float") is not None


def test_unknown_format_is_refused(sam, tmp_path):
    with pytest.raises(onnx_export.ExportError, match="unknown export format 'labelme'"):
        onnx_export.export_onnx(sam, "tiny", tmp_path,
                                options=onnx_export.ExportOptions(formats=("labelme",)))

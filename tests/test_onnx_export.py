"""export-onnx: files, manifest, verification, external data, the command's exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.shell.commands import export_onnx as cmd
from sam_engine import constants
from sam_engine.onnx import export as onnx_export
from sam_engine.onnx import quantize as onnx_quantize
from sam_engine.onnx import trace as onnx_trace
from sam_engine.onnx.graphs import ImageTermsGraph, embed_points
from sam_engine.onnx.manifest import OnnxManifest
from tests.onnx_models import SEED, exported
from tests.sam_factory import tiny_sam


@pytest.fixture(scope="module")
def result():
    return exported()


def test_every_graph_is_written_and_verified(result):
    m = result.manifest
    roles = {(f.role, f.quantized) for f in m.files}
    assert roles == {("decoder_meta", False), ("image_terms", False), ("decoder_fast", False),
                     ("decoder_fast_nomask", False), ("decoder_fused", False),
                     ("decoder_fixed", False), ("decoder_click", False), ("decoder_fast", True),
                     ("decoder_fast_nomask", True), ("decoder_click", True), ("encoder", False),
                     ("encoder", True)}
    checked = {v.path: v for v in m.verification}
    assert set(checked) == {f.path for f in m.files if f.role != "image_terms"}
    for f in m.files:
        if f.role == "image_terms":
            continue
        v = checked[f.path]
        assert v.passed, v
        if not f.quantized:
            assert v.min_mask_iou >= onnx_export.FP32_MIN_IOU
            assert v.max_abs_logit_diff < 1e-3, v
        else:
            assert v.mean_mask_iou >= onnx_export.INT8_MIN_IOU >= 0.95


def test_manifest_round_trips_with_hashes_and_constants(result):
    m = OnnxManifest.load(result.out_dir)
    assert m.model_id == "tiny" and m.checkpoint_sha256 == "0" * 64
    assert m.opset == onnx_export.DEFAULT_OPSET
    assert m.exporter_version == onnx_export.EXPORTER_VERSION
    pp = m.preprocessing
    assert pp.pixel_mean == constants.PIXEL_MEAN and pp.pixel_std == constants.PIXEL_STD
    assert (pp.img_size, pp.low_res_size, pp.version) == (
        constants.IMG_SIZE, constants.LOW_RES_SIZE, constants.PREPROCESS_VERSION)
    for f in m.files:
        path = result.out_dir / f.path
        if not f.external_data:  # the recorded sha256 is the file's, as sha256sum prints it
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
        assert path.stat().st_size == f.size_bytes
    meta = m.find("decoder_meta")
    assert [t.name for t in meta.inputs] == ["image_embeddings", "point_coords", "point_labels",
                                             "mask_input", "has_mask_input", "orig_im_size"]
    assert [t.name for t in meta.outputs] == ["masks", "iou_predictions", "low_res_masks"]
    fast = m.find("decoder_fast")
    assert fast.inputs[4].shape == ("batch", "num_points", 2)
    assert fast.outputs[0].shape == ("batch", 4, 256, 256)
    click = m.find("decoder_click")
    assert [(t.name, t.shape) for t in click.inputs] == [
        ("src", (4096, 256)), ("k1h", (8, 4096, 16)), ("v1h", (8, 4096, 16)),
        ("q1", (8, 4096, 16)), ("point_coords", (1, "num_points", 2)),
        ("point_labels", (1, "num_points"))]
    assert [(t.name, t.shape) for t in click.outputs] == [
        ("low_res_masks", (1, 4, 256, 256)), ("iou_predictions", (1, 4))]
    assert json.loads((result.out_dir / "manifest.json").read_text())["format"] == 1


def test_fixed_shape_variants_have_no_dynamic_axes(result):
    for role in ("decoder_fixed", "encoder"):
        f = result.manifest.find(role)
        for t in (*f.inputs, *f.outputs):
            assert all(isinstance(d, int) for d in t.shape), (role, t)
    enc = result.manifest.find("encoder")
    assert [(t.name, t.dtype, t.shape) for t in enc.inputs] == [
        ("image", "uint8", (1024, 1024, 3)), ("input_size", "int64", (2,))]


def test_click_graph_has_no_runtime_shape_arithmetic(result):
    """decoder_click is written so onnxruntime folds every shape at load: no Shape/Expand nodes
    on the image-sized path, one DepthToSpace for the pixel shuffle, no 8-D Transpose."""
    model = onnx.load(str(result.out_dir / "decoder_click.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DepthToSpace") == 1 and ops.count("Shape") <= 1
    assert len(ops) < len(onnx.load(str(result.out_dir / "decoder_fast_nomask.onnx")).graph.node)


def test_int8_decoder_keeps_heads_and_prompt_encoding_in_float(result):
    q = onnx.load(str(result.out_dir / "decoder_click.int8.onnx"))
    ints = {i.name for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    floats = {i.name for i in q.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert any("transformer.layers.0.mlp.lin1" in n for n in ints)
    for part in ("output_hypernetworks", "iou_prediction_head", "pe_layer"):
        assert not any(part in n for n in ints), part
        assert any(part in n for n in floats), part
    quantized = {n.name for n in q.graph.node if n.op_type == "DynamicQuantizeMatMul"
                 or n.op_type == "MatMulInteger"}
    assert quantized and not any("hypernetworks" in n or "iou_prediction" in n
                                 for n in quantized)
    fp32 = result.manifest.find("decoder_click")
    assert result.manifest.find("decoder_click", True).size_bytes < 0.7 * fp32.size_bytes


def test_large_models_use_external_data(tmp_path):
    sam = tiny_sam(SEED).requires_grad_(False)
    data = onnx_trace.trace(ImageTermsGraph(sam), (torch.randn(1, 256, 64, 64),),
                              ("image_embeddings",), ("src", "k1", "v1", "q1"), None, 17)
    inline_bytes = data.SerializeToString()  # _save moves the weights out of `data`
    ext = onnx_export._save(data, tmp_path / "terms.onnx", external_data_bytes=1000)
    assert ext == ("terms.onnx.data",)
    assert (tmp_path / "terms.onnx").stat().st_size < 100_000 < (tmp_path / ext[0]).stat().st_size
    onnx.checker.check_model(str(tmp_path / "terms.onnx"))
    emb = np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32)
    out = ort.InferenceSession(str(tmp_path / "terms.onnx")).run(None, {"image_embeddings": emb})
    inline = ort.InferenceSession(inline_bytes).run(None, {"image_embeddings": emb})
    assert all(np.array_equal(a, b) for a, b in zip(out, inline, strict=True))
    q_ext = onnx_quantize.quantize_all(tmp_path / "terms.onnx", tmp_path / "terms.int8.onnx", True)
    assert q_ext == ("terms.int8.onnx.data",)
    q = ort.InferenceSession(str(tmp_path / "terms.int8.onnx")).run(None, {"image_embeddings": emb})
    assert np.abs(q[0] - out[0]).max() < 0.1 * np.abs(out[0]).max()


def test_verification_failure_is_reported(result, monkeypatch):
    monkeypatch.setattr(onnx_export, "FP32_MIN_IOU", 1.01)  # nothing can pass
    written = [(result.out_dir / f.path, f.role, f.quantized, ())
               for f in result.manifest.files if f.role in ("image_terms", "decoder_fast")
               and not f.quantized]
    res = onnx_export.verify_exports(tiny_sam(SEED), "tiny", written,
                                     onnx_export.ExportOptions(verify_cases=1))
    assert len(res) == 1 and not res[0].passed and res[0].min_mask_iou >= 0.99


def _args(tmp_path, **kw):
    base = dict(model="tiny", checkpoint=None, out=tmp_path / "models", encoder=False,
                quantize=False, opset=17, format=None)
    return argparse.Namespace(**{**base, **kw})


def test_command_exports_and_prints_the_checks(result, tmp_path, monkeypatch, capsys):
    calls = []

    def export(sam, model_id, out, *, checkpoint_sha256, options):
        calls.append((model_id, out, checkpoint_sha256, options))
        return result  # the session's real export (tests/onnx_models.py)

    monkeypatch.setattr(cmd, "load_model", lambda model, ckpt, **_: ("SAM", "ab" * 32))
    monkeypatch.setattr(cmd, "export_onnx", export)
    assert cmd.run(_args(tmp_path, encoder=True, quantize=True, opset=18)) == 0
    (model_id, out, sha, opts), = calls
    assert (model_id, out, sha) == ("tiny", tmp_path / "models", "ab" * 32)
    assert (opts.encoder, opts.quantize, opts.opset) == (True, True, 18)
    assert opts.formats == ("sam-inspect",)
    printed = capsys.readouterr().out
    assert "decoder_fast.onnx" in printed and "encoder.int8.onnx" in printed
    assert "NO" not in printed and f"wrote {len(result.manifest.files)} models" in printed


def test_command_fails_when_verification_fails(result, tmp_path, monkeypatch, capsys):
    import shutil

    out = tmp_path / "models"
    shutil.copytree(result.out_dir, out)
    manifest = OnnxManifest.load(out)
    manifest.verification[0] = dataclasses.replace(manifest.verification[0], passed=False,
                                                   min_mask_iou=0.5)
    manifest.save(out)

    def failing_export(*args, **kwargs):
        raise onnx_export.ExportError("ONNX export does not reproduce PyTorch: decoder_meta.onnx")

    monkeypatch.setattr(cmd, "load_model", lambda model, ckpt, **_: (None, None))
    monkeypatch.setattr(cmd, "export_onnx", failing_export)
    assert cmd.run(_args(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "does not reproduce PyTorch" in captured.err
    assert "0.5000" in captured.out and "NO" in captured.out


def test_command_parser_accepts_the_documented_options():
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export-onnx", "--model", "vit_b", "--checkpoint", "c.pth", "--out",
                              "d", "--encoder", "--quantize", "--opset", "18"])
    assert (args.model, str(args.checkpoint), str(args.out)) == ("vit_b", "c.pth", "d")
    assert args.encoder and args.quantize and args.opset == 18 and args.func is cmd.run
    assert parser.parse_args(["export-onnx", "--model", "m", "--out", "d"]).opset == 17
    args = parser.parse_args(["export-onnx", "--model", "m", "--out", "d", "--format",
                              "samexporter", "--format", "x-anylabeling"])
    assert args.format == ["samexporter", "x-anylabeling"]


def test_command_passes_the_formats_and_names_the_x_anylabeling_config(
        result, tmp_path, monkeypatch, capsys):
    calls = []

    def export(sam, model_id, out, *, checkpoint_sha256, options):
        calls.append(options)
        return result

    monkeypatch.setattr(cmd, "load_model", lambda model, ckpt, **_: ("SAM", None))
    monkeypatch.setattr(cmd, "export_onnx", export)
    assert cmd.run(_args(tmp_path, format=["x-anylabeling", "samexporter", "x-anylabeling"])) == 0
    assert calls[0].formats == ("x-anylabeling", "samexporter")
    assert onnx_export.X_ANYLABELING_CONFIG in capsys.readouterr().out


def test_point_embedding_equals_meta_onnx_model():
    """embed_points computes the sparse embedding of SamOnnxModel._embed_points (Meta's ONNX
    decoder) for points, box corners and padding."""
    from segment_anything.utils.onnx import SamOnnxModel

    sam = tiny_sam(SEED)
    coords = torch.rand(2, 5, 2, generator=torch.Generator().manual_seed(1)) * 1024
    labels = torch.tensor([[1, 0, 2, 3, -1], [-1, 1, 1, 0, 3]], dtype=torch.float)
    with torch.no_grad():
        ref = SamOnnxModel(sam, return_single_mask=False)._embed_points(coords, labels)
        got = embed_points(sam.prompt_encoder, coords, labels, sam.image_encoder.img_size)
    assert torch.equal(got, ref)

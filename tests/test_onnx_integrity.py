"""ONNX exports are checked by sha256 at load (once per file version) and refused when their
manifest says verification failed; the int8 option says what was really loaded; the cached
click decoder is verified and rebuilt when corrupt."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sam_engine.errors import CheckpointError
from sam_engine.onnx.manifest import OnnxManifest, file_digest
from sam_engine.onnx.runtime import OnnxEngine
from sam_engine.weights import file_hash
from tests.onnx_models import exported


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def models() -> Path:
    return exported().out_dir


def _copy(models: Path, tmp_path: Path) -> Path:
    d = tmp_path / "models"
    shutil.copytree(models, d)
    return d


def _age_all(folder: Path, seconds: int = 60) -> None:
    for f in folder.iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def _flip(path: Path, n: int = 4096) -> None:
    """n bytes inverted in the middle of the file (inside the weights), size unchanged."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _edit_manifest(folder: Path, change) -> None:
    p = folder / "manifest.json"
    d = json.loads(p.read_text())
    change(d)
    p.write_text(json.dumps(d))


@pytest.mark.parametrize("name", ["encoder.onnx", "decoder_click.onnx", "decoder_fast.onnx"])
def test_flipped_bytes_are_refused(models, tmp_path, name):
    d = _copy(models, tmp_path)
    _flip(d / name)
    with pytest.raises(CheckpointError) as err:
        OnnxEngine(d, threads=1)
    msg = str(err.value)
    m = OnnxManifest.load(d)
    f = next(f for f in m.files if f.path == name)
    assert str(d / name) in msg and f.sha256 in msg
    assert file_digest(d, f) in msg and "export-onnx" in msg


def test_digest_matches_the_exporters(models):
    m = OnnxManifest.load(models)
    for f in m.files:
        assert file_digest(models, f) == f.sha256, f.path


def test_hash_check_is_cached_per_file_version(models, tmp_path, monkeypatch):
    d = _copy(models, tmp_path)
    _age_all(d)
    calls = []
    real = file_hash.hash_file
    monkeypatch.setattr(file_hash, "hash_file",
                        lambda p, progress=False: calls.append(p.name) or real(p, progress))
    OnnxEngine(d, threads=1)
    first = len(calls)
    assert first >= 3
    OnnxEngine(d, threads=1)
    assert len(calls) == first  # nothing hashed again


def test_failed_verification_is_refused(models, tmp_path):
    d = _copy(models, tmp_path)

    def fail(m):
        for v in m["verification"]:
            if v["path"] == "decoder_fast.onnx":
                v["passed"] = False
    _edit_manifest(d, fail)
    with pytest.raises(CheckpointError) as err:
        OnnxEngine(d, threads=1)
    msg = str(err.value)
    assert "decoder_fast.onnx" in msg and "verification" in msg and "export-onnx" in msg
    eng = OnnxEngine(d, threads=1, allow_unverified=True)
    assert "unverified" in eng.info.note


def test_failed_verification_of_an_unused_file_does_not_block(models, tmp_path):
    d = _copy(models, tmp_path)

    def fail(m):
        for v in m["verification"]:
            if v["path"] == "decoder_fast.int8.onnx":
                v["passed"] = False
    _edit_manifest(d, fail)
    OnnxEngine(d, threads=1)  # fp32 only
    with pytest.raises(CheckpointError, match="decoder_fast.int8.onnx"):
        OnnxEngine(d, threads=1, quantized=True)


def test_quantized_without_int8_encoder_says_what_it_loaded(models, tmp_path, caplog):
    d = _copy(models, tmp_path)
    _edit_manifest(d, lambda m: m.update(files=[
        f for f in m["files"] if not (f["role"] == "encoder" and f["quantized"])]))
    with caplog.at_level(logging.WARNING, logger="sam_engine.onnx.runtime"):
        eng = OnnxEngine(d, threads=1, quantized=True)
    assert eng.info.dtype != "int8"
    assert eng.precisions["encoder"] == "float32" and eng.precisions["decoder_fast"] == "int8"
    assert "encoder" in caplog.text and "int8" in caplog.text
    assert "float32" in eng.info.note


def test_quantized_without_any_int8_copy_is_an_error(models, tmp_path):
    d = _copy(models, tmp_path)
    _edit_manifest(d, lambda m: m.update(files=[f for f in m["files"] if not f["quantized"]]))
    with pytest.raises(CheckpointError, match="--quantize"):
        OnnxEngine(d, threads=1, quantized=True)


def test_embedding_cache_key_includes_the_encoder_precision(models):
    image = np.zeros((40, 60, 3), np.uint8)
    fp32 = OnnxEngine(models, threads=1).set_image(image).key
    int8 = OnnxEngine(models, threads=1, quantized=True).set_image(image).key
    assert fp32 != int8
    assert "float32" in fp32 and "int8" in int8


# ------------------------------------------------------------------ cached click decoder
def test_corrupt_cached_click_decoder_is_rebuilt(tmp_path, caplog):
    from sam_engine.sam import click_decoder as onnx_click
    from tests.sam_factory import tiny_sam

    sam = tiny_sam(seed=2)
    folder = tmp_path / "onnx-click"
    onnx_click.OnnxClickDecoder.build(sam, folder, 1)
    (stored,) = folder.glob("*.onnx")
    good = stored.read_bytes()
    _flip(stored)
    with caplog.at_level(logging.WARNING, logger="sam_engine.sam.click_decoder"):
        onnx_click.OnnxClickDecoder.build(sam, folder, 1)
    assert "corrupt" in caplog.text and str(stored) in caplog.text
    assert stored.read_bytes() == good  # rebuilt and stored again


def test_cached_click_decoder_without_its_hash_is_rebuilt(tmp_path, monkeypatch):
    from sam_engine.sam import click_decoder as onnx_click
    from tests.sam_factory import tiny_sam

    sam = tiny_sam(seed=2)
    folder = tmp_path / "onnx-click"
    onnx_click.OnnxClickDecoder.build(sam, folder, 1)
    (sidecar,) = folder.glob("*.sha256")
    sidecar.unlink()
    exports = []
    real = onnx_click._export
    monkeypatch.setattr(onnx_click, "_export", lambda s: exports.append(1) or real(s))
    onnx_click.OnnxClickDecoder.build(sam, folder, 1)
    assert exports and sidecar.is_file()
    onnx_click.OnnxClickDecoder.build(sam, folder, 1)
    assert len(exports) == 1  # verified: loaded without export

"""Checkpoint sha256: always computed (once per path/size/mtime), recorded as computed, and a
mismatch with the manifest or a user-given hash refused unless explicitly allowed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam_engine.errors import CheckpointError
from sam_engine.weights import checkpoint, file_hash, registry
from sam_engine.weights.checkpoint import (
    CheckpointMismatchError,
    check_checkpoint,
    load_sam,
    load_sam_checked,
)
from sam_engine.weights.registry import ModelSpec
from tests.sam_factory import save_state_dict, tiny_sam


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")
    monkeypatch.setenv(registry.ENV_MODELS, str(tmp_path / "models"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory):
    return save_state_dict(tiny_sam(seed=0), tmp_path_factory.mktemp("c") / "t.pth").read_bytes()


def _spec(data: bytes, **changes) -> ModelSpec:
    spec = ModelSpec(id="tiny", arch="tiny", filename="tiny.pth", size_bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest(), url="http://127.0.0.1/tiny.pth",
                     licence="Apache-2.0", source="test")
    return replace(spec, **changes)


def _age(path, seconds=60):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def _flip(path, offset=None):
    """Same size, one byte changed deep inside (inside a tensor's data)."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _builder():
    return tiny_sam(seed=1)


def test_official_name_with_other_bytes_is_refused(tmp_path, tiny_bytes):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    _flip(path)  # same size as the official file, other content
    spec = _spec(tiny_bytes)
    with pytest.raises(CheckpointMismatchError) as err:
        load_sam("tiny", path, spec=spec, builder=_builder)  # no verify_hash asked
    e = err.value
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert e.path == path and e.expected_sha256 == spec.sha256 and e.actual_sha256 == actual
    msg = str(e)
    assert str(path) in msg and spec.sha256 in msg and actual in msg
    assert "--allow-unverified-checkpoint" in msg


def test_official_name_with_other_size_is_refused(tmp_path, tiny_bytes):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    spec = _spec(tiny_bytes, size_bytes=len(tiny_bytes) + 10)
    with pytest.raises(CheckpointMismatchError) as err:
        load_sam("tiny", path, spec=spec, builder=_builder)
    assert err.value.actual_size == len(tiny_bytes)
    assert err.value.expected_size == len(tiny_bytes) + 10
    assert f"{len(tiny_bytes):,}" in str(err.value)


def test_allowed_mismatch_records_the_computed_hash_as_unverified(tmp_path, tiny_bytes):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    spec = _spec(tiny_bytes, sha256="0" * 64)
    loaded = load_sam_checked("tiny", path, spec=spec, builder=_builder, allow_unverified=True)
    assert loaded.check.sha256 == hashlib.sha256(tiny_bytes).hexdigest()
    assert loaded.check.verified is False and loaded.check.expected_sha256 == "0" * 64
    assert not loaded.model.training


def test_matching_official_file_is_verified(tmp_path, tiny_bytes):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    check = check_checkpoint(path, _spec(tiny_bytes))
    assert check.verified and check.sha256 == hashlib.sha256(tiny_bytes).hexdigest()
    assert check.size_bytes == len(tiny_bytes) and "manifest" in check.source


def test_custom_checkpoint_records_its_hash_unverified(tmp_path, tiny_bytes):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(tiny_bytes)
    loaded = load_sam_checked("tiny", path, builder=_builder)
    assert loaded.check.sha256 == hashlib.sha256(tiny_bytes).hexdigest()
    assert loaded.check.verified is False and loaded.check.expected_sha256 is None


def test_custom_checkpoint_bit_flip_is_refused_with_an_expected_hash(tmp_path, tiny_bytes):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(tiny_bytes)
    good = hashlib.sha256(tiny_bytes).hexdigest()
    assert load_sam_checked("tiny", path, builder=_builder, expected_sha256=good).check.verified
    _flip(path)
    with pytest.raises(CheckpointMismatchError, match="--checkpoint-sha256"):
        load_sam("tiny", path, builder=_builder, expected_sha256=good)


def test_custom_checkpoint_sidecar_sha256_is_checked(tmp_path, tiny_bytes):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(tiny_bytes)
    sidecar = tmp_path / "finetuned.pth.sha256"
    sidecar.write_text(f"{hashlib.sha256(tiny_bytes).hexdigest()}  finetuned.pth\n")
    check = check_checkpoint(path, None)
    assert check.verified and str(sidecar) in check.source
    _flip(path)
    with pytest.raises(CheckpointMismatchError) as err:
        check_checkpoint(path, None)
    assert str(sidecar) in str(err.value)
    sidecar.write_text("not a hash\n")
    with pytest.raises(CheckpointError, match="64 hex"):
        check_checkpoint(path, None)


def test_bad_expected_hash_is_a_clear_error(tmp_path, tiny_bytes):
    path = tmp_path / "finetuned.pth"
    path.write_bytes(tiny_bytes)
    with pytest.raises(CheckpointError, match="64 hex"):
        check_checkpoint(path, None, expected_sha256="abc")


def test_hashed_once_per_path_size_and_mtime(tmp_path, tiny_bytes, monkeypatch):
    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    _age(path)
    calls = []
    real = file_hash.hash_file
    monkeypatch.setattr(file_hash, "hash_file", lambda p, progress=False: calls.append(p) or real(
        p, progress))
    spec = _spec(tiny_bytes)
    check_checkpoint(path, spec)
    check_checkpoint(path, spec)
    assert len(calls) == 1
    assert (tmp_path / "cache" / file_hash.HASH_CACHE_NAME).is_file()
    _flip(path)  # rewritten now: the record no longer applies
    with pytest.raises(CheckpointMismatchError):
        check_checkpoint(path, spec)
    assert len(calls) == 2


def test_hash_cache_works_for_a_read_only_checkpoint_folder(tmp_path, tiny_bytes):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "tiny.pth"
    path.write_bytes(tiny_bytes)
    _age(path)
    sha = file_hash.file_sha256(path)
    assert list(folder.iterdir()) == [path]  # nothing written beside the checkpoint
    assert file_hash.cached_sha256(path) == sha


# ------------------------------------------------------------------ the factory's records
def _fake_manifest(monkeypatch, spec):
    monkeypatch.setattr(registry, "load_manifest", lambda path=None: {spec.id: spec})
    monkeypatch.setattr(checkpoint, "load_manifest", lambda path=None: {spec.id: spec})
    monkeypatch.setattr(checkpoint, "build_arch", lambda arch: tiny_sam(seed=1))


def test_engine_records_the_computed_sha256_not_the_manifests(tmp_path, tiny_bytes, monkeypatch):
    from sam_engine.factory import load_engine

    path = tmp_path / "tiny.pth"
    path.write_bytes(tiny_bytes)
    spec = _spec(tiny_bytes, sha256="ab" * 32)  # the official name, other bytes
    _fake_manifest(monkeypatch, spec)
    with pytest.raises(CheckpointMismatchError):
        load_engine("sam", model="tiny", checkpoint=path, device="cpu")
    eng = load_engine("sam", model="tiny", checkpoint=path, device="cpu",
                      allow_unverified=True)
    assert eng.info.checkpoint_sha256 == hashlib.sha256(tiny_bytes).hexdigest()
    assert eng.info.checkpoint_verified is False and "unverified" in eng.info.note
    _fake_manifest(monkeypatch, _spec(tiny_bytes))
    ok = load_engine("sam", model="tiny", checkpoint=path, device="cpu")
    assert ok.info.checkpoint_verified is True
    assert ok.info.checkpoint_sha256 == hashlib.sha256(tiny_bytes).hexdigest()


def test_changed_checkpoint_never_reuses_embeddings(tmp_path, monkeypatch):
    """Two files whose encoder weights differ only past the sampled values: other cache keys."""
    from sam_engine.factory import load_engine

    sam = tiny_sam(seed=0)
    a = save_state_dict(sam, tmp_path / "a" / "finetuned.pth")
    w = sam.image_encoder.blocks[0].mlp.lin1.weight
    with torch.no_grad():
        w.view(-1)[1000] += 1.0
    b = save_state_dict(sam, tmp_path / "b" / "finetuned.pth")
    monkeypatch.setattr(checkpoint, "build_arch", lambda arch: tiny_sam(seed=1))
    image = np.zeros((32, 48, 3), np.uint8)
    keys = []
    for path in (a, b):
        eng = load_engine("sam", model="vit_b", checkpoint=path, device="cpu", disk_cache=False)
        keys.append(eng.set_image(image).key)
    assert keys[0] != keys[1]

"""Checkpoint verification and loading: every bad file gives one CheckpointError, never a
torch/pickle traceback; a good file loads into the right architecture."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import replace

import pytest
import torch

from sam_engine.errors import CheckpointError
from sam_engine.weights import checkpoint, file_hash, registry
from sam_engine.weights.checkpoint import guess_arch, load_sam, verify_checkpoint
from sam_engine.weights.registry import ModelSpec
from tests.sam_factory import save_state_dict, tiny_sam


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return save_state_dict(tiny_sam(seed=0), tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="module")
def tiny_bytes(tiny_file):
    return tiny_file.read_bytes()


@pytest.fixture
def spec(tiny_bytes):
    return ModelSpec(
        id="tiny", arch="tiny", filename="tiny.pth", size_bytes=len(tiny_bytes),
        sha256=hashlib.sha256(tiny_bytes).hexdigest(), url="http://127.0.0.1/tiny.pth",
        licence="Apache-2.0", source="test",
    )


@pytest.fixture
def copy(tmp_path, tiny_bytes):
    """Write `data` (default: the whole tiny checkpoint) to tmp_path/NAME."""

    def write(data: bytes | None = None, name: str = "tiny.pth"):
        path = tmp_path / name
        path.write_bytes(tiny_bytes if data is None else data)
        return path

    return write


@pytest.fixture(autouse=True)
def no_installed_models(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")
    monkeypatch.setenv(registry.ENV_MODELS, str(tmp_path / "models"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))  # the sha256 records


def _tiny_builder():
    return tiny_sam(seed=1)  # other random weights: loading must overwrite all of them


# ------------------------------------------------------------------ verify_checkpoint
def test_missing_file(tmp_path, spec):
    path = tmp_path / "tiny.pth"
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(path, spec)
    msg = str(err.value)
    assert str(path) in msg and "does not exist" in msg
    assert "sam-inspect models download tiny" in msg and "--checkpoint PATH" in msg


def test_empty_file(copy, spec):
    path = copy(b"")
    with pytest.raises(CheckpointError, match="is empty") as err:
        verify_checkpoint(path, spec)
    assert f"{spec.size_bytes:,} bytes" in str(err.value)


def test_truncated_file(copy, spec, tiny_bytes):
    half = len(tiny_bytes) // 2
    path = copy(tiny_bytes[:half])
    with pytest.raises(CheckpointError, match="truncated") as err:
        verify_checkpoint(path, spec)
    msg = str(err.value)
    assert f"{half:,} of {len(tiny_bytes):,} bytes" in msg and str(path) in msg
    assert "models download tiny" in msg


def test_truncated_zip_without_known_size(copy, tiny_bytes):
    path = copy(tiny_bytes[: len(tiny_bytes) - 100])
    with pytest.raises(CheckpointError, match="damaged or truncated zip"):
        verify_checkpoint(path, None)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (os.urandom(4096), "not a PyTorch checkpoint"),
        (b"<!DOCTYPE html><html><body>Access denied</body></html>", "web page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", "Git LFS"),
    ],
)
def test_not_a_checkpoint(copy, spec, data, words):
    path = copy(data)
    with pytest.raises(CheckpointError, match=words) as err:
        verify_checkpoint(path, spec)
    assert str(path) in str(err.value)


def test_sha256_mismatch(copy, spec):
    path = copy()
    bad = replace(spec, sha256="0" * 64)
    verify_checkpoint(path, bad)  # the fast check does not hash
    with pytest.raises(CheckpointError, match="sha256") as err:
        verify_checkpoint(path, bad, full_hash=True)
    msg = str(err.value)
    assert "0" * 64 in msg and spec.sha256 in msg and str(path) in msg


def _age(path, seconds=60):
    """Move the file's mtime into the past, as for any file not written just now."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def test_sha256_is_hashed_once_per_size_and_mtime(copy, spec, monkeypatch):
    path = copy()
    _age(path)
    calls = []
    real = file_hash.hash_file
    monkeypatch.setattr(file_hash, "hash_file", lambda p, progress=False: calls.append(p) or real(
        p, progress))
    verify_checkpoint(path, spec, full_hash=True)
    verify_checkpoint(path, spec, full_hash=True)
    assert len(calls) == 1
    assert checkpoint.cached_sha256(path) == spec.sha256
    _age(path, -5)  # rewritten later: the record no longer applies
    assert checkpoint.cached_sha256(path) is None
    verify_checkpoint(path, spec, full_hash=True)
    assert len(calls) == 2


def test_sha256_record_of_a_just_written_file_is_not_trusted(copy, spec):
    path = copy()
    checkpoint.remember_sha256(path, spec.sha256)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, maybe within the same mtime tick
    assert checkpoint.cached_sha256(path) is None
    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(path, spec, full_hash=True)


def test_cached_mismatch_is_caught_without_full_hash(copy, spec):
    path = copy()
    _age(path)
    checkpoint.remember_sha256(path, "f" * 64)  # e.g. recorded by an earlier full check
    with pytest.raises(CheckpointError, match="f" * 64):
        verify_checkpoint(path, spec)


def test_unknown_manifest_values_warn_once(copy, spec, caplog):
    path = copy()
    unknown = replace(spec, id="tiny_unknown", size_bytes=None, sha256=None)
    with caplog.at_level(logging.WARNING, logger="sam_engine.weights.checkpoint"):
        verify_checkpoint(path, unknown, full_hash=True)
        verify_checkpoint(path, unknown, full_hash=True)
    warnings = [r.getMessage() for r in caplog.records if "tiny_unknown" in r.getMessage()]
    assert len(warnings) == 2  # one for size, one for sha256, each once
    assert any("sha256" in w for w in warnings) and any("size" in w for w in warnings)


# ------------------------------------------------------------------ load_sam
def test_valid_tiny_checkpoint_loads(copy, spec):
    path = copy()
    model = load_sam("tiny", path, spec=spec, builder=_tiny_builder, verify_hash=True)
    assert not model.training
    expected = tiny_sam(seed=0).state_dict()
    got = model.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_legacy_pickle_format_loads(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(tiny_sam(seed=0).state_dict(), path, _use_new_zipfile_serialization=False)
    model = load_sam("tiny", path, builder=_tiny_builder)
    ref = tiny_sam(seed=0).state_dict()["mask_decoder.iou_token.weight"]
    assert torch.equal(model.state_dict()["mask_decoder.iou_token.weight"], ref)


def test_wrapped_state_dict_loads(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": tiny_sam(seed=0).state_dict()}, path)
    model = load_sam("tiny", path, builder=_tiny_builder)
    ref = tiny_sam(seed=0).state_dict()["image_encoder.pos_embed"]
    assert torch.equal(model.state_dict()["image_encoder.pos_embed"], ref)


def test_wrong_architecture_names_file_guess_and_fix(copy):
    path = copy(name="finetuned.pth")
    with pytest.raises(CheckpointError) as err:
        load_sam("vit_b", path)  # a tiny encoder is no ViT-B
    msg = str(err.value)
    assert str(path) in msg and "vit_b architecture" in msg
    assert "embed dim 64, 2 blocks" in msg and "missing" in msg
    assert "models download vit_b" in msg


def test_known_other_architecture_fails_before_building(tmp_path, monkeypatch):
    # A state dict shaped like ViT-B's encoder (tiny tensors except the patch embedding).
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    state |= {f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)}
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, path)

    def no_build(arch):
        raise AssertionError("must not build a model for a file of another architecture")

    monkeypatch.setattr(checkpoint, "build_arch", no_build)
    with pytest.raises(CheckpointError) as err:
        load_sam("vit_h", path)
    msg = str(err.value)
    assert "vit_h architecture" in msg and "looks like a vit_b checkpoint" in msg
    assert "--model vit_b" in msg and str(path) in msg


@pytest.mark.parametrize("kind", ["truncated", "random", "html"])
def test_bad_files_never_leak_a_torch_traceback(copy, tiny_bytes, kind):
    data = {
        "truncated": tiny_bytes[: len(tiny_bytes) // 3],
        "random": os.urandom(10_000),
        "html": b"<html>404</html>",
    }[kind]
    path = copy(data, name="custom.pth")  # not the manifest's name: no size to compare with
    with pytest.raises(CheckpointError) as err:
        load_sam("tiny", path, builder=_tiny_builder)
    assert str(path) in str(err.value)
    assert err.value.__cause__ is None or isinstance(err.value.__cause__, CheckpointError)


def test_zip_with_garbage_inside_is_a_checkpoint_error(tmp_path):
    import zipfile

    path = tmp_path / "fake.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot be read by torch"):
        load_sam("tiny", path, builder=_tiny_builder)


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"x": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="Python objects besides tensors"):
        load_sam("tiny", path, builder=_tiny_builder)


def test_no_checkpoint_installed():
    with pytest.raises(CheckpointError) as err:
        load_sam("vit_b")
    msg = str(err.value)
    assert "sam_vit_b_01ec64.pth" in msg and "sam-inspect models download vit_b" in msg
    assert "--checkpoint PATH" in msg


def test_unknown_model_id():
    with pytest.raises(CheckpointError, match="unknown model 'vit_q'"):
        load_sam("vit_q", "x.pth")


def test_installed_checkpoint_is_found_and_checked(tmp_path, copy):
    models = tmp_path / "models"
    models.mkdir()
    path = copy(b"\x00" * 100, name="models/sam_vit_b_01ec64.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"{path} is not a PyTorch")):
        load_sam("vit_b")


def test_vit_t_without_mobile_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mobile_sam", None)  # import fails as if not installed
    with pytest.raises(CheckpointError, match=re.escape("pip install sam-inspect[mobile]")):
        checkpoint.build_arch("vit_t")


# ------------------------------------------------------------------ guess_arch
@pytest.mark.parametrize(
    ("keys", "arch", "words"),
    [
        ({"image_encoder.patch_embed.seq.0.c.weight": (32, 3, 3, 3)}, "vit_t", "MobileSAM"),
        ({"vision_encoder.patch_embed.projection.weight": (1,)}, None, "Hugging Face"),
        ({"image_encoder.trunk.patch_embed.proj.weight": (1,)}, None, "SAM 2"),
        ({"mask_decoder.iou_token.weight": (1, 256)}, None, "without an image encoder"),
        ({"fc.weight": (10, 10)}, None, "not a SAM checkpoint"),
    ],
)
def test_guess_arch(keys, arch, words):
    guess = guess_arch({k: torch.zeros(s) for k, s in keys.items()})
    assert guess.arch == arch and words in guess.detail


@pytest.mark.parametrize(("dim", "blocks", "arch"), [(1280, 32, "vit_h"), (1024, 24, "vit_l")])
def test_guess_arch_from_pos_embed_and_blocks(dim, blocks, arch):
    state = {"image_encoder.pos_embed": torch.zeros(1, 2, 2, dim)}
    state |= {f"image_encoder.blocks.{i}.attn.qkv.bias": torch.zeros(1) for i in range(blocks)}
    assert guess_arch(state).arch == arch

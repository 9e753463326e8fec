"""The model manifest and where checkpoints are looked for."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sam_engine.errors import CheckpointError
from sam_engine.weights import registry
from sam_engine.weights.registry import ModelSpec


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """No real user or repo checkpoint folder leaks into a test."""
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(registry.ENV_MODELS, raising=False)
    return tmp_path


def test_default_manifest_lists_the_official_checkpoints():
    specs = registry.load_manifest()
    assert list(specs) == ["vit_h", "vit_l", "vit_b", "vit_t"]
    vit_b = specs["vit_b"]
    assert isinstance(vit_b, ModelSpec)
    assert vit_b.arch == "vit_b" and vit_b.filename == "sam_vit_b_01ec64.pth"
    assert vit_b.url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    assert vit_b.size_bytes == 375042383
    assert specs["vit_h"].filename == "sam_vit_h_4b8939.pth"
    assert specs["vit_l"].filename == "sam_vit_l_0b3195.pth"
    for spec in specs.values():
        assert spec.licence == "Apache-2.0"
        assert spec.source, f"{spec.id} must say where its values come from"
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
    assert specs["vit_t"].optional and specs["vit_t"].extra == "mobile"
    assert not specs["vit_b"].optional


def test_spec_is_frozen():
    spec = registry.load_manifest()["vit_b"]
    with pytest.raises(AttributeError):
        spec.sha256 = "0" * 64  # type: ignore[misc]


def _write_manifest(path: Path, models) -> Path:
    path.write_text(json.dumps({"models": models}), encoding="utf-8")
    return path


ENTRY = {
    "id": "tiny", "arch": "tiny", "filename": "tiny.pth", "size_bytes": None, "sha256": None,
    "url": "http://127.0.0.1/tiny.pth", "licence": "Apache-2.0", "source": "test",
}


def test_custom_manifest_with_unknown_values(tmp_path):
    specs = registry.load_manifest(_write_manifest(tmp_path / "m.json", [ENTRY]))
    assert specs["tiny"].size_bytes is None and specs["tiny"].sha256 is None
    assert specs["tiny"].optional is False


@pytest.mark.parametrize(
    ("models", "words"),
    [
        ([{**ENTRY, "sha256": "XYZ"}], "sha256"),
        ([{**ENTRY, "size_bytes": -3}], "size_bytes"),
        ([{k: v for k, v in ENTRY.items() if k != "url"}], "url"),
        ([ENTRY, ENTRY], "twice"),
        ("not a list", "'models'"),
    ],
)
def test_bad_manifest_names_the_problem(tmp_path, models, words):
    path = _write_manifest(tmp_path / "bad.json", models)
    with pytest.raises(CheckpointError, match=re.escape(words)) as err:
        registry.load_manifest(path)
    assert str(path) in str(err.value)


def test_unreadable_manifest(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="cannot be read"):
        registry.load_manifest(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        registry.load_manifest(tmp_path / "absent.json")


def test_model_dirs_order(isolated_dirs, monkeypatch):
    a, b = isolated_dirs / "a", isolated_dirs / "b"
    monkeypatch.setenv(registry.ENV_MODELS, f"{a}{os.pathsep}{os.pathsep}{b}")
    dirs = registry.model_dirs()
    assert dirs[:3] == [a, b, isolated_dirs / "repo_ckpts"]
    assert dirs[3] == registry.user_data_dir()
    assert len(dirs) == 4
    assert registry.default_download_dir() == a


def test_user_data_dir_per_platform(isolated_dirs, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setattr(registry.sys, "platform", "linux")
    assert registry.user_data_dir() == isolated_dirs / "home/.local/share/sam-inspect/models"
    monkeypatch.setattr(registry.sys, "platform", "darwin")
    assert registry.user_data_dir() == (
        isolated_dirs / "home/Library/Application Support/sam-inspect/models"
    )
    monkeypatch.setattr(registry.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(isolated_dirs / "local"))
    assert registry.user_data_dir() == isolated_dirs / "local/sam-inspect/models"


def test_default_download_dir_without_env(isolated_dirs):
    assert registry.default_download_dir() == isolated_dirs / "xdg/sam-inspect/models"


def test_find_checkpoint_first_match_wins(isolated_dirs, monkeypatch):
    a, b = isolated_dirs / "a", isolated_dirs / "b"
    monkeypatch.setenv(registry.ENV_MODELS, os.pathsep.join([str(a), str(b)]))
    assert registry.find_checkpoint("vit_b") is None
    b.mkdir()
    (b / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert registry.find_checkpoint("vit_b") == b / "sam_vit_b_01ec64.pth"
    a.mkdir()
    (a / "sam_vit_b_01ec64.pth").write_bytes(b"y")
    assert registry.find_checkpoint("vit_b") == a / "sam_vit_b_01ec64.pth"
    user = isolated_dirs / "xdg/sam-inspect/models"
    user.mkdir(parents=True)
    (user / "mobile_sam.pt").write_bytes(b"z")
    assert registry.find_checkpoint("vit_t") == user / "mobile_sam.pt"


def test_find_checkpoint_ignores_folders_named_like_the_file(isolated_dirs, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS, str(isolated_dirs / "a"))
    (isolated_dirs / "a" / "sam_vit_h_4b8939.pth").mkdir(parents=True)
    assert registry.find_checkpoint("vit_h") is None


def test_unknown_model_id(isolated_dirs):
    with pytest.raises(CheckpointError, match="unknown model 'vit_x'.*vit_b"):
        registry.find_checkpoint("vit_x")


def test_installed(isolated_dirs, monkeypatch):
    monkeypatch.setenv(registry.ENV_MODELS, str(isolated_dirs / "a"))
    (isolated_dirs / "a").mkdir()
    (isolated_dirs / "a" / "sam_vit_l_0b3195.pth").write_bytes(b"x")
    rows = registry.installed()
    assert [s.id for s, _ in rows] == ["vit_h", "vit_l", "vit_b", "vit_t"]
    found = {s.id: p for s, p in rows}
    assert found["vit_l"] == isolated_dirs / "a" / "sam_vit_l_0b3195.pth"
    assert found["vit_h"] is None and found["vit_b"] is None


def test_spec_for_file():
    assert registry.spec_for_file("/x/y/sam_vit_h_4b8939.pth").id == "vit_h"
    assert registry.spec_for_file("finetuned.pth") is None

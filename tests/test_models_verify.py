"""`sam-inspect models verify` on custom checkpoints: the computed sha256 against --sha256 or
PATH.sha256, and the load_engine options of add_checkpoint_check_args."""

from __future__ import annotations

import argparse
import hashlib

import pytest

from app.shell import cli
from app.shell.cli import main
from app.shell.commands.models import add_checkpoint_check_args, checkpoint_check_options
from sam_engine.weights import registry
from tests.sam_factory import save_state_dict, tiny_sam


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", ("models",))
    monkeypatch.setenv(registry.ENV_MODELS, str(tmp_path / "models"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")


@pytest.fixture
def custom(tmp_path):
    return save_state_dict(tiny_sam(seed=0), tmp_path / "finetuned.pth")


def test_verify_custom_checkpoint_with_expected_sha256(custom, capsys):
    sha = hashlib.sha256(custom.read_bytes()).hexdigest()
    assert main(["models", "verify", str(custom)]) == 0
    assert sha in capsys.readouterr().out
    assert main(["models", "verify", str(custom), "--sha256", sha]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["models", "verify", str(custom), "--sha256", "0" * 64]) == 2
    err = capsys.readouterr().err
    assert sha in err and "0" * 64 in err and str(custom) in err


def test_verify_custom_checkpoint_against_its_sidecar(custom, capsys):
    sha = hashlib.sha256(custom.read_bytes()).hexdigest()
    (custom.parent / "finetuned.pth.sha256").write_text(f"{sha}  finetuned.pth\n")
    assert main(["models", "verify", str(custom)]) == 0
    assert "OK" in capsys.readouterr().out
    data = bytearray(custom.read_bytes())
    data[len(data) // 2] ^= 1
    custom.write_bytes(bytes(data))
    assert main(["models", "verify", str(custom)]) == 2
    assert "finetuned.pth.sha256" in capsys.readouterr().err


def test_checkpoint_check_options():
    p = argparse.ArgumentParser()
    add_checkpoint_check_args(p)
    assert checkpoint_check_options(p.parse_args([])) == {
        "checkpoint_sha256": None, "allow_unverified": False}
    got = checkpoint_check_options(p.parse_args(
        ["--checkpoint-sha256", "ab" * 32, "--allow-unverified-checkpoint"]))
    assert got == {"checkpoint_sha256": "ab" * 32, "allow_unverified": True}

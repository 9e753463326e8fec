"""`sam-inspect models ...` through the real entry point (app.shell.cli.main)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.shell import cli
from app.shell.cli import main
from sam_engine.weights import registry


@pytest.fixture(autouse=True)
def only_models_command(monkeypatch):
    """Build the real parser with just `models`: these tests must not depend on the other
    subcommands' modules (their own tests cover them)."""
    monkeypatch.setattr(cli, "COMMANDS", ("models",))


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv(registry.ENV_MODELS, str(d))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")
    return d


def test_models_list(models_dir, capsys):
    (models_dir / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ARCH", "SIZE", "INSTALLED", "LICENCE"]
    row = {line.split()[0]: line for line in lines[1:5]}
    assert set(row) == {"vit_h", "vit_l", "vit_b", "vit_t"}
    assert str(models_dir / "sam_vit_b_01ec64.pth") in row["vit_b"]
    assert "not installed" in row["vit_h"] and "Apache-2.0" in row["vit_h"]
    assert "358 MiB" in row["vit_b"]
    assert str(models_dir) in out.split("Search folders")[1]


def test_models_without_action_lists(models_dir, capsys):
    assert main(["models"]) == 0
    assert "vit_b" in capsys.readouterr().out


def test_unknown_model_is_a_clean_error(models_dir, capsys):
    assert main(["models", "download", "vit_zz"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'vit_zz'" in err and "Traceback" not in err


def test_verify_missing_model(models_dir, capsys):
    assert main(["models", "verify", "vit_b"]) == 2
    assert "sam-inspect models download vit_b" in capsys.readouterr().err


@pytest.fixture
def tiny_manifest(tmp_path, monkeypatch):
    """A manifest with one small file served from 127.0.0.1."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # shaped like a torch checkpoint (a zip)
        zf.writestr("tiny/data/0", bytes(range(256)) * 4000)
    payload = buf.getvalue()
    www = tmp_path / "www"
    www.mkdir()
    (www / "tiny.pth").write_bytes(payload)
    manifest = tmp_path / "manifest.json"
    entry = {
        "id": "tiny", "arch": "tiny", "filename": "tiny.pth", "size_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(), "url": "http://127.0.0.1:9/none",
        "licence": "Apache-2.0", "source": "test",
    }
    manifest.write_text(json.dumps({"models": [entry]}), encoding="utf-8")
    monkeypatch.setattr(registry, "DEFAULT_MANIFEST", manifest)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    handler = partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/tiny.pth", payload
    httpd.shutdown()
    httpd.server_close()


def test_download_then_verify(models_dir, tiny_manifest, capsys):
    url, payload = tiny_manifest
    assert main(["models", "download", "tiny", "--url", url, "--no-progress"]) == 0
    assert (models_dir / "tiny.pth").read_bytes() == payload
    assert "installed tiny" in capsys.readouterr().out
    assert main(["models", "download", "tiny", "--url", url]) == 0
    assert "already installed" in capsys.readouterr().out
    assert main(["models", "verify", "tiny"]) == 0
    assert "size and sha256 match" in capsys.readouterr().out
    changed = bytearray(payload)
    changed[5000] ^= 0xFF  # same size, other bytes
    (models_dir / "tiny.pth").write_bytes(bytes(changed))
    assert main(["models", "verify", str(models_dir / "tiny.pth")]) == 2
    assert "sha256" in capsys.readouterr().err

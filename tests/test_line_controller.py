"""The line runtime in an environment holding only packaging/line-controller/requirements.txt.

A fresh venv gets, with pip and nothing else, the wheels of those requirements (from the
wheelhouse `make install` downloads into .venv/line-wheels: no network here) and a wheel of this
checkout built without dependencies. Its `sam-inspect-line` console script must run a recipe on
an exported model without torch and agree with the PyTorch engine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_engine.prompts import Prompts
from sam_engine.sam.backend import SamEngine
from tests.line_case import write_line_case
from tests.onnx_models import SEED, exported
from tests.sam_factory import tiny_sam

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "packaging" / "line-controller" / "requirements.txt"
WHEELHOUSE = REPO / ".venv" / "line-wheels"


def _required() -> list[str]:
    names = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!~ \[]", line)[0])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def test_requirements_have_no_torch_and_match_the_constraints():
    names = _required()
    assert {"numpy", "onnxruntime", "opencv-python-headless"} <= set(names)
    assert not any(k in n for n in names for k in ("torch", "segment", "PySide", "Qt"))
    pinned = {_norm(line.split("==")[0]) for line in (REPO / "constraints.txt").read_text()
              .splitlines() if "==" in line and not line.startswith("#")}
    assert {_norm(n) for n in names} <= pinned  # the tested versions are pinned


def _wheelhouse_or_skip() -> Path:
    if not WHEELHOUSE.is_dir():
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: run `make install` (it downloads the line "
                    "requirements' wheels there) to run this offline test")
    have = {_norm(p.name.split("-")[0]) for p in WHEELHOUSE.glob("*.whl")}
    missing = [n for n in _required() if _norm(n) not in have]
    if missing:
        pytest.skip(f"wheelhouse {WHEELHOUSE} lacks {missing}: re-run `make install`")
    return WHEELHOUSE


def _project_wheel(tmp_path: Path) -> Path:
    """A wheel of this checkout (no dependencies), built from a copy so the repo stays clean."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("app", "sam_engine"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True, timeout=300)
    (wheel,) = out.glob("sam_inspect-*.whl")
    return wheel


@pytest.mark.slow
def test_line_command_runs_in_a_clean_env(tmp_path):
    wheels = _wheelhouse_or_skip()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # ensurepip: bundled, offline
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check",
           "--find-links", str(wheels)]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PIP_* settings leak in
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, timeout=600, env=clean)
    subprocess.run([*pip, "--no-deps", str(_project_wheel(tmp_path))], check=True, timeout=300,
                   env=clean)
    listed = subprocess.run([py, "-m", "pip", "list", "--format", "json"], check=True,
                            capture_output=True, text=True, env=clean).stdout
    installed = {_norm(d["name"]) for d in json.loads(listed)}
    assert not installed & {"torch", "torchvision", "segment_anything", "pyside6_essentials"}
    probe = subprocess.run([py, "-I", "-c", "import torch"], capture_output=True, env=clean)
    assert probe.returncode != 0  # the clean env really has no torch

    models = exported().out_dir
    img, recipe = write_line_case(tmp_path)
    r = subprocess.run(
        [env_dir / "bin" / "sam-inspect-line", str(img), "--models", str(models), "--recipe",
         str(recipe), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean,
    )
    assert r.returncode in (0, 1), r.stderr
    res = json.loads((tmp_path / "out" / "part_result.json").read_text())
    assert r.returncode == (1 if res["verdict"]["status"] == "FAIL" else 0)  # documented codes
    assert str(env_dir) in subprocess.run(  # the command ran our copy, not the checkout
        [py, "-c", "import app.shell.line_main as m; print(m.__file__)"], capture_output=True,
        text=True, cwd=tmp_path, env=clean).stdout
    assert res["verdict"]["status"] in ("PASS", "FAIL")

    import cv2

    rgb = cv2.imread(str(img))[..., ::-1]
    engine = SamEngine(tiny_sam(SEED), "tiny", device="cpu")
    from segment_anything import SamPredictor

    predictor = SamPredictor(engine.model)  # the exported encoder is Meta's
    with torch.no_grad():
        predictor.set_image(rgb)
    handle = engine.handle_from_embedding(predictor.features, rgb.shape[:2])
    labels = cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED)
    ref = engine.predict(handle, Prompts.from_boxes([[10, 10, 100, 80]]),
                         multimask_output=False).best()
    first = labels == 1  # the recipe's first prompt; later masks may cover some of its pixels
    inter = np.logical_and(first, ref).sum()
    area = res["defects"][0]["area_px"]  # of the whole mask, before later masks cover it
    assert abs(area - int(ref.sum())) <= 0.01 * max(int(ref.sum()), 1)
    assert first.sum() == 0 or inter / first.sum() >= 0.99
    assert res["defects"][0]["measurements"]["mm_per_px"] == 0.1


# ------------------------------------------------------------------ result JSON and exit codes

LINE_RECIPE_FAKE = """\
schema_version = 1
[part]
name = "p"
version = "1"
[calibration]
mm_per_px = 0.1
[classes.scratch]
max_area_mm2 = 1.0
min_score = 0.5
"""


class _FakeEngine:
    """Stands in for OnnxEngine: each predict call returns the next (mask, score)."""

    outputs: list = []

    def __init__(self, models, **_kw):
        from sam_engine.results import EngineInfo

        self.info = EngineInfo("sam-onnx", "tiny", "cpu", "float32", str(models),
                               checkpoint_sha256="c" * 64)
        self.providers = ["CPUExecutionProvider"]
        self.queue = list(self.outputs)

    def set_image(self, rgb):
        from sam_engine.results import ImageHandle

        return ImageHandle("k", rgb.shape[:2], rgb.shape[:2], None)

    def predict(self, handle, prompts, multimask_output=True):
        from sam_engine.results import Masks

        mask, score = self.queue.pop(0)
        return Masks(mask[None, None], np.array([[score]]), np.zeros((1, 1, 256, 256)))


def _box_mask(y0, y1, x0, x1, shape=(60, 80)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _fake_line(tmp_path, monkeypatch, outputs, recipe=True):
    import cv2

    from app.shell import line_main

    monkeypatch.setattr(_FakeEngine, "outputs", outputs)
    monkeypatch.setattr(line_main, "OnnxEngine", _FakeEngine)
    img = tmp_path / "part.png"
    cv2.imwrite(str(img), np.zeros((60, 80, 3), np.uint8))
    (tmp_path / "r.toml").write_text(LINE_RECIPE_FAKE)
    argv = [str(img), "--models", str(tmp_path), "--defect-class", "scratch", "--out",
            str(tmp_path / "o")]
    for _ in outputs:
        argv += ["--box", "1,1,20,20"]
    if recipe:
        argv += ["--recipe", str(tmp_path / "r.toml")]
    code = line_main.main(argv)
    res = json.loads((tmp_path / "o" / "part_result.json").read_text())
    return code, res, img


def test_defect_numbers_are_the_label_values_also_after_an_empty_mask(tmp_path, monkeypatch):
    import cv2

    empty = np.zeros((60, 80), bool)
    big = _box_mask(10, 30, 10, 40)  # 600 px = 6 mm² > 1 mm²
    code, res, _ = _fake_line(tmp_path, monkeypatch, [(empty, 0.9), (big, 0.9)])
    assert code == 1  # FAIL
    assert [d["number"] for d in res["defects"]] == [1, 2]
    (reason,) = res["verdict"]["reasons"]
    assert reason["defect_number"] == 2 and "scratch #2" in reason["message"]
    labels = cv2.imread(res["mask_png"])  # the default flag reads the 8-bit labels as they are
    assert np.array_equal(labels[..., 0] == 2, big)


def test_result_lists_defects_below_min_score_as_dropped(tmp_path, monkeypatch):
    weak = _box_mask(10, 30, 10, 40)
    code, res, _ = _fake_line(tmp_path, monkeypatch, [(weak, 0.3)])
    assert code == 0 and res["verdict"]["status"] == "PASS"
    assert res["verdict"]["dropped"] == [
        {"defect_number": 1, "defect_class": "scratch", "score": pytest.approx(0.3),
         "min_score": 0.5}]


def test_result_records_time_hashes_and_format(tmp_path, monkeypatch):
    import hashlib
    from datetime import datetime

    code, res, img = _fake_line(tmp_path, monkeypatch, [(_box_mask(1, 3, 1, 3), 0.9)],
                                recipe=False)
    assert code == 0 and res["verdict"] is None
    assert res["result_format"] == 2
    assert datetime.fromisoformat(res["time"]).utcoffset().total_seconds() == 0
    assert res["image_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    assert res["checkpoint_sha256"] == "c" * 64
    assert res["models"] == {}  # the fake engine says nothing about its files: nothing claimed


def test_unexpected_errors_exit_2_not_1(tmp_path, monkeypatch, capsys):
    from app.shell import line_main

    def crash(*_a, **_kw):
        raise RuntimeError("onnxruntime blew up")

    monkeypatch.setattr(line_main, "run_line", crash)
    img = tmp_path / "x.png"
    assert line_main.main([str(img), "--models", str(tmp_path), "--box", "1,1,5,5"]) == 2
    assert "onnxruntime blew up" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    from app.shell import line_main

    with pytest.raises(SystemExit):
        line_main.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out and "0  PASS" in out and "1  FAIL" in out and "2  error" in out


def test_real_onnx_models_report_their_checked_sha256(tmp_path):
    import hashlib

    from app.shell.line_main import main

    models = exported().out_dir
    img, recipe = write_line_case(tmp_path)
    code = main([str(img), "--models", str(models), "--recipe", str(recipe), "--out",
                 str(tmp_path / "o")])
    res = json.loads((tmp_path / "o" / "part_result.json").read_text())
    assert code == (1 if res["verdict"]["status"] == "FAIL" else 0)
    assert res["checkpoint_sha256"] == "0" * 64
    assert "decoder_fast" in res["models"]
    for entry in res["models"].values():
        path = models / entry["path"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

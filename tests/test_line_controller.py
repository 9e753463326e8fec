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
from sam_engine.sam_backend import SamEngine
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
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "part_result.json").read_text())
    assert str(env_dir) in subprocess.run(  # the command ran our copy, not the checkout
        [py, "-c", "import app.line_main as m; print(m.__file__)"], capture_output=True,
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

"""The line runtime in an environment holding only packaging/line-controller/requirements.txt.

A fresh venv (no pip, no torch) sees only the required packages (linked from this venv, so the
test needs no network) plus this checkout's code; sam-inspect-line must run in it and agree with
the PyTorch engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_engine.prompts import Prompts
from sam_engine.sam_backend import SamEngine
from tests.onnx_models import SEED, exported
from tests.sam_factory import tiny_sam

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "packaging" / "line-controller" / "requirements.txt"
# import names (and their runtime dependencies) of the distributions in requirements.txt
DISTRIBUTIONS = {
    "numpy": ["numpy", "numpy.libs"],
    "onnxruntime": ["onnxruntime", "flatbuffers", "packaging", "google"],
    "opencv-python-headless": ["cv2", "opencv_python_headless.libs"],
}


def _required() -> list[str]:
    names = []
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!~ ]", line)[0])
    return names


def test_requirements_have_no_torch():
    names = _required()
    assert set(names) == set(DISTRIBUTIONS)
    assert not any("torch" in n or "segment" in n for n in names)


@pytest.mark.slow
def test_line_command_runs_in_a_clean_env(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for dist in _required():
        for name in DISTRIBUTIONS[dist]:
            if (ours / name).exists():
                (site / name).symlink_to(ours / name)
    models = exported().out_dir
    rgb = np.kron(np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8),
                  np.ones((10, 10, 1), np.uint8))
    import cv2

    img = tmp_path / "part.png"
    cv2.imwrite(str(img), rgb[..., ::-1])
    r = subprocess.run(
        [py, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "import app.line_main as m; sys.exit(m.main(sys.argv[2:]))", str(REPO),
         str(img), "--models", str(models), "--box", "20,30,150,120", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    probe = subprocess.run([py, "-I", "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0  # the clean env really has no torch
    res = json.loads((tmp_path / "part_result.json").read_text())
    engine = SamEngine(tiny_sam(SEED), "tiny", device="cpu")
    with torch.no_grad():
        ref = engine.predict(engine.set_image(rgb), Prompts.from_boxes([[20, 30, 150, 120]]))
    labels = cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED)
    best = ref.best()
    inter = np.logical_and(labels == 1, best).sum()
    union = np.logical_or(labels == 1, best).sum()
    assert union == 0 or inter / union >= 0.99
    assert res["defects"][0]["area_px"] == int((labels == 1).sum())
    assert sys.executable != str(py)

"""app.inspection.evaluation and `sam-inspect eval`: IoU and bbox maths, manifests, the eval
command."""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.inspection.evaluation import (
    InstanceRow,
    box_fill_mask,
    evaluate,
    instance_mask,
    interior_point,
    iou,
    prompt_for,
    read_manifest,
)
from app.shell.commands import eval as eval_cmd
from sam_engine.classic import ClassicEngine
from sam_engine.errors import SamEngineError
from sam_engine.results import EngineInfo, Masks

SUMMARY = re.compile(r"^mean_iou=(\d+\.\d{4}) baseline_box_fill=(\d+\.\d{4}) n=(\d+)$")
FIELDS = ["dataset", "image_path", "mask_path", "class", "component_id", "area_px",
          "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]


def defects_dir() -> Path:
    env = os.environ.get("SAM_INSPECT_DEFECTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"


# ---------------------------------------------------------------- maths on tiny masks
def test_iou_on_tiny_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert iou(a, b) == 1.0  # both empty: nothing to disagree about
    a[0, :2] = True  # 2 px
    b[0, 1:4] = True  # 3 px, 1 shared
    assert iou(a, b) == pytest.approx(1 / 4)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0


def test_box_fill_uses_exclusive_box():
    m = box_fill_mask((5, 6), (1, 2, 4, 5))
    assert m.sum() == 3 * 3 and m[2, 1] and m[4, 3] and not m[4, 4] and not m[5 - 1, 0]


def test_instance_mask_picks_the_matching_component():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:4] = True  # inclusive bbox (1, 1, 3, 2)
    m[6:9, 6:8] = True  # inclusive bbox (6, 6, 7, 8)
    m[3, 4] = True  # touches the first blob diagonally: 8-connected to it
    first = instance_mask(m, (1, 1, 4, 3))
    assert first.sum() == 7 and not first[7, 7]
    assert instance_mask(m, (6, 6, 7, 8)).sum() == 6
    with pytest.raises(ValueError, match="no 8-connected"):
        instance_mask(m, (1, 1, 3, 2))


def test_interior_point_and_prompts():
    m = np.zeros((9, 15), bool)
    m[2:7, 5:10] = True  # a 5x5 square: its centre pixel (7, 4) is the one most interior
    assert interior_point(m) == (7.5, 4.5)  # pixel centre in pixel-edge coordinates
    m[2:7, 3:12] = True
    row = InstanceRow(Path("i.png"), Path("m.png"), "x", 45, (3, 2, 11, 6))
    assert row.box_xyxy == (3, 2, 12, 7)
    box = prompt_for(row, m, "box")
    assert box.boxes.tolist() == [[3, 2, 12, 7]] and box.points is None
    pt = prompt_for(row, m, "point")
    assert pt.points.tolist() == [list(interior_point(m))] and pt.labels.tolist() == [1]
    with pytest.raises(ValueError, match="prompt kind"):
        prompt_for(row, m, "scribble")


# ---------------------------------------------------------------- tiny dataset on disk
def write_tiny_dataset(root: Path, n_images: int = 4) -> int:
    """Noisy plates with two dark ellipses and one 10-px speck each; returns rows >= 20 px."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(7)
    rows, kept = [], 0
    for i in range(n_images):
        img = np.full((96, 128), 170.0)
        mask = np.zeros((96, 128), np.uint8)
        for cx in (32, 92):
            cv2.ellipse(mask, (cx, 48), (int(rng.integers(8, 20)), int(rng.integers(8, 30))),
                        0, 0, 360, 255, -1)
        mask[2:4, 60:65] = 255  # a 10-px speck: below the default min area
        img[mask > 0] = 80
        img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"p{i}.png"), img)
        cv2.imwrite(str(root / "masks" / f"p{i}.png"), mask)
        n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8),
                                                          connectivity=8)
        for k in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[k])
            rows.append({"dataset": "tiny", "image_path": f"images/p{i}.png",
                         "mask_path": f"masks/p{i}.png", "class": "blob" if area >= 20 else "speck",
                         "component_id": k, "area_px": area, "bbox_x0": x, "bbox_y0": y,
                         "bbox_x1": x + w - 1, "bbox_y1": y + h - 1})
            kept += area >= 20
    with (root / "manifest_components.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return kept


@pytest.fixture()
def tiny(tmp_path) -> tuple[Path, int]:
    return tmp_path, write_tiny_dataset(tmp_path)


def test_read_manifest_filters(tiny):
    root, kept = tiny
    rows = read_manifest(root)
    assert len(rows) == kept == 8 and all(r.area_px >= 20 for r in rows)
    assert len(read_manifest(root, min_area=1)) == 12
    assert len(read_manifest(root, dataset="speck", min_area=1)) == 4
    sub = read_manifest(root, limit=3)
    assert len(sub) == 3 and sub == read_manifest(root, limit=3), "subsample is reproducible"
    assert rows[0].image_path == root / "images" / "p0.png"


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(SamEngineError, match="manifest_components.csv"):
        read_manifest(tmp_path)


class BoxFillEngine:
    """An engine that answers every box with the whole box: its IoU must equal the baseline."""

    info = EngineInfo(name="boxfill", model_id="test", device="cpu", dtype="float32")

    def set_image(self, image):
        from sam_engine.results import ImageHandle

        return ImageHandle("k", image.shape[:2], image.shape[:2], None)

    def predict(self, handle, prompts, multimask_output=True):
        m = box_fill_mask(handle.original_size, prompts.boxes[0].astype(int))
        return Masks(m[None, None], np.ones((1, 1)), np.zeros((1, 1, 256, 256), np.float32))


def test_evaluate_is_consistent(tiny):
    root, kept = tiny
    rows = read_manifest(root)
    fill = evaluate(BoxFillEngine(), rows, "box", progress=False)
    assert fill.n == kept and fill.mean_iou == pytest.approx(fill.box_fill_iou)
    classic = evaluate(ClassicEngine(), rows, "box", progress=False)
    assert classic.box_fill_iou == pytest.approx(fill.box_fill_iou)
    assert classic.mean_iou > 0.85 > classic.box_fill_iou
    (cls,) = classic.per_class()
    assert cls.cls == "blob" and cls.n == kept and cls.mean_iou == pytest.approx(classic.mean_iou)
    m = SUMMARY.match(classic.summary_line())
    assert m and int(m.group(3)) == kept


def _run_eval(capsys, *argv) -> tuple[int, list[str]]:
    parser = argparse.ArgumentParser()
    eval_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", *map(str, argv), "--no-progress"])
    rc = args.func(args)
    return rc, capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_eval_command_output(tiny, capsys, prompt):
    root, kept = tiny
    rc, lines = _run_eval(capsys, root, "--prompt", prompt, "--limit", 6)
    assert rc == 0
    m = SUMMARY.match(lines[-1])
    assert m, lines[-1]
    mean, fill, n = float(m.group(1)), float(m.group(2)), int(m.group(3))
    assert n == 6 and 0 <= fill <= 1 and 0 <= mean <= 1
    table = {ln.split()[0]: ln.split() for ln in lines[1:-1]}
    assert table["blob"][1] == "6" and float(table["all"][2]) == pytest.approx(mean, abs=1e-4)
    assert float(table["all"][3]) == pytest.approx(fill, abs=1e-4)
    assert mean > fill, "the default engine beats filling the box on clear blobs"


def test_eval_command_on_generated_dataset(tmp_path, capsys):
    synthetic = pytest.importorskip("sam_engine.synthetic.generator")
    synthetic.write_dataset(tmp_path, 3, seed=3, size=(192, 256))
    rc, lines = _run_eval(capsys, tmp_path, "--limit", 10)
    m = SUMMARY.match(lines[-1])
    assert rc == 0 and m and 0 < int(m.group(3)) <= 10
    assert float(m.group(1)) > float(m.group(2))


def test_eval_command_errors(tmp_path, capsys):
    with pytest.raises(SamEngineError, match="manifest_components.csv"):
        _run_eval(capsys, tmp_path)
    write_tiny_dataset(tmp_path / "d")
    with pytest.raises(SamEngineError, match="no instances"):
        _run_eval(capsys, tmp_path / "d", "--min-area", 100000)
    with pytest.raises(SamEngineError, match="--limit"):
        _run_eval(capsys, tmp_path / "d", "--limit", 0)


# ---------------------------------------------------------------- real images (research-only)
@pytest.mark.skipif(not (defects_dir() / "manifest_components.csv").is_file(),
                    reason="shared/data/defects is not present")
def test_real_defects_subset_beats_box_fill():
    """80 fixed rows of NEU-Seg / CrackForest: the default engine must beat filling the box,
    overall and in every class with enough rows to say so."""
    rows = read_manifest(defects_dir(), limit=80, seed=1)
    result = evaluate(ClassicEngine(), rows, "box", progress=False)
    assert result.n == 80
    assert result.mean_iou > result.box_fill_iou + 0.05
    for c in result.per_class():
        if c.n >= 5:
            assert c.mean_iou > c.box_fill_iou, c


@pytest.mark.skipif(not (defects_dir() / "manifest_components.csv").is_file(),
                    reason="shared/data/defects is not present")
def test_real_defects_subset_point_prompts():
    """One click per instance on 80 fixed real rows: the issue's bar for the full set is a mean
    IoU of 0.5; a random 80-row subset must come close to it."""
    rows = read_manifest(defects_dir(), limit=80, seed=1)
    result = evaluate(ClassicEngine(), rows, "point", progress=False)
    assert result.n == 80 and result.mean_iou > 0.45

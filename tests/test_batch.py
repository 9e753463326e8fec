"""Batch mode, local backend: findings vs synthetic ground truth, formats, outputs, resume,
corrupt files, prompt file formats, recipe prompts, the SAM path (tiny random SAM) and the CLI."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.batch import BatchConfig, run_batch
from app.batch.discovery import find_images
from app.batch.prompt_files import PromptFileError, read_json_prompts, read_yolo_prompts
from app.batch.runner import BatchError
from app.inspection.findings import rle_to_mask
from app.inspection.recipe import parse_recipe
from app.shell.cli import main as cli_main
from app.store import InspectionStore
from sam_engine.classic import ClassicEngine
from sam_engine.image_io import load_image
from sam_engine.prompts import Prompts
from tests.batch_data import PATCH_LIMIT, RECIPE_BASE, SIZE, write_parts

RECIPE = RECIPE_BASE + PATCH_LIMIT


def config(tmp: Path, **kw) -> BatchConfig:
    kw.setdefault("engine", "classic")
    kw.setdefault("quiet", True)
    return BatchConfig(tmp / "in", tmp / "out", **kw)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """8 parts in four formats (png, jpg, bmp, 16-bit tif), our JSON prompts beside them."""
    tmp = tmp_path_factory.mktemp("parts")
    truth = write_parts(tmp / "in", 8, suffixes=(".png", ".jpg", ".bmp", ".tif"))
    (tmp / "recipe.toml").write_text(RECIPE)
    return tmp, truth


@pytest.fixture(scope="module")
def first_run(parts):
    tmp, truth = parts
    result = run_batch(config(tmp, prompts=tmp / "in", recipe=tmp / "recipe.toml"))
    return tmp, truth, result


def test_every_format_is_found_and_inspected(first_run):
    tmp, truth, result = first_run
    assert result.exit_code == 0
    assert sorted(r.rel for r in result.records) == sorted(truth)
    assert result.summary["images_inspected"] == 8 and result.summary["images_failed"] == 0


def test_findings_match_ground_truth(first_run):
    _, truth, result = first_run
    ratios = []
    for r in result.records:
        gt = truth[r.rel]
        assert [f.defect_class for f in r.inspection.findings] == [d["kind"] for d in gt]
        ratios += [f.measurements.area_px / d["area"]
                   for f, d in zip(r.inspection.findings, gt, strict=True)]
    ratios = np.array(ratios)
    assert len(ratios) == sum(len(v) for v in truth.values())
    assert 0.8 < np.median(ratios) < 1.25
    assert np.mean(np.abs(ratios - 1) <= 0.35) >= 0.75


def test_findings_equal_direct_engine_calls(first_run):
    """Batch does what a person calling the engine box by box would do (same masks)."""
    tmp, truth, result = first_run
    eng = ClassicEngine()
    for r in result.records[:3]:
        handle = eng.set_image(load_image(tmp / "in" / r.rel))
        boxes = [d["box"] for d in truth[r.rel]]
        masks = eng.predict(handle, Prompts.from_boxes(boxes), multimask_output=False)
        for b, f in enumerate(r.inspection.findings):
            assert np.array_equal(masks.best(b), f.mask)


def test_outputs_agree_with_each_other(first_run):
    tmp, _, result = first_run
    out = tmp / "out"
    coco = json.loads((out / "coco.json").read_text())
    rows = list(csv.DictReader((out / "findings.csv").open()))
    jsonl = [json.loads(line) for line in (out / "findings.jsonl").read_text().splitlines()]
    n = sum(len(r.inspection.findings) for r in result.records)
    assert len(coco["annotations"]) == len(rows) == len(jsonl) == n
    assert {c["name"] for c in coco["categories"]} >= {f.defect_class for r in result.records
                                                         for f in r.inspection.findings}
    ann = coco["annotations"][0]
    rec = result.records[0]
    first = rec.inspection.findings[0]
    assert np.array_equal(rle_to_mask(ann["segmentation"]), first.mask)
    assert ann["area"] == first.measurements.area_px == int(rows[0]["area_px"])
    assert float(rows[0]["area_mm2"]) == pytest.approx(first.measurements.area_px * 0.05**2,
                                                        rel=1e-3)
    label = cv2.imread(str(out / "masks" / f"{rec.out_stem}.png"), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8 and label.shape == SIZE  # 8-bit while labels fit
    last = rec.inspection.findings[-1]  # later masks win where masks overlap
    assert np.array_equal(label == len(rec.inspection.findings), last.mask)
    assert np.array_equal(label > 0, np.logical_or.reduce([f.mask for f in
                                                           rec.inspection.findings]))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["defects"] == n and sum(summary["verdicts"].values()) == 8
    with InspectionStore(out / "inspections.db") as store:
        stored = list(store.iter_inspections())
    assert len(stored) == 8
    assert sum(len(s.findings) for s in stored) == n


def test_verdicts_follow_the_recipe(first_run):
    _, _, result = first_run
    for r in result.records:
        has_patch = any(f.defect_class == "patch" for f in r.inspection.findings)
        assert r.inspection.verdict.status == ("FAIL" if has_patch else "PASS")


def test_rerun_skips_done_images_and_force_redoes_them(first_run):
    tmp, _, first = first_run
    again = run_batch(config(tmp, prompts=tmp / "in", recipe=tmp / "recipe.toml"))
    assert again.summary["images_skipped"] == 8 and again.summary["images_inspected"] == 0
    assert [r.to_dict() for r in again.records] == [r.to_dict() for r in first.records]
    forced = run_batch(config(tmp, prompts=tmp / "in", recipe=tmp / "recipe.toml", force=True))
    assert forced.summary["images_inspected"] == 8


def test_report_option_writes_one_report_per_image_with_its_verdict(first_run):
    tmp, _, first = first_run
    out = tmp / "out_reports"
    result = run_batch(BatchConfig(tmp / "in", out, engine="classic", quiet=True, report="md",
                                   prompts=tmp / "in", recipe=tmp / "recipe.toml"))
    for rec in result.records:
        text = (out / "reports" / f"{rec.out_stem}.md").read_text()
        assert rec.inspection.verdict.status in text
        assert rec.inspection.part_id and rec.inspection.part_id in text


def test_changed_prompt_file_or_settings_redo_only_what_changed(tmp_path):
    truth = write_parts(tmp_path / "in", 3)
    run_batch(config(tmp_path, prompts=tmp_path / "in"))
    p = tmp_path / "in" / "part_01.json"
    data = json.loads(p.read_text())
    data["defects"] = data["defects"][:1]
    p.write_text(json.dumps(data))
    again = run_batch(config(tmp_path, prompts=tmp_path / "in"))
    assert again.summary["images_inspected"] == 1 and again.summary["images_skipped"] == 2
    by_rel = {r.rel: r for r in again.records}
    assert len(by_rel["part_01.png"].inspection.findings) == 1
    assert len(by_rel["part_00.png"].inspection.findings) == len(truth["part_00.png"])
    other = run_batch(config(tmp_path, prompts=tmp_path / "in", mm_per_px=0.1))
    assert other.summary["images_inspected"] == 3  # new settings: everything redone


def test_corrupt_image_and_bad_prompt_file_are_logged_and_skipped(tmp_path, caplog):
    write_parts(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "in" / "part_02.json").write_text("{not json")
    with caplog.at_level(logging.ERROR):
        result = run_batch(config(tmp_path, prompts=tmp_path / "in"))
    assert result.exit_code == 1
    assert result.summary["images_inspected"] == 2 and result.summary["images_failed"] == 2
    failed = {Path(f["path"]).name for f in result.summary["failed"]}
    assert failed == {"broken.png", "part_02.png"}
    assert "broken.png" in caplog.text and "part_02.json" in caplog.text
    # fixed files are inspected on the next run, done ones are not redone
    (tmp_path / "in" / "broken.png").unlink()
    write_parts(tmp_path / "in", 3)
    again = run_batch(config(tmp_path, prompts=tmp_path / "in"))
    assert again.exit_code == 0 and again.summary["images_inspected"] == 1


def test_discovery_recursive_sorted_and_excluding(tmp_path):
    for rel in ("b/x.PNG", "a/y.jpeg", "a/.hidden.png", "z.txt", "c/d/e.tiff", "gt/g.png",
                "a/y.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = find_images(tmp_path, exclude=tmp_path / "c", patterns=("gt/*",))
    assert [f.rel for f in found] == ["a/y.jpeg", "a/y.png", "b/x.PNG"]
    assert [f.out_stem for f in found] == ["a/y_jpeg", "a/y_png", "b/x"]


def test_prompt_file_formats_give_the_same_findings(tmp_path):
    """The same boxes as our JSON, as YOLO txt (normalised) and as a COCO file."""
    truth = write_parts(tmp_path / "in", 2)
    h, w = SIZE
    names = sorted({d["kind"] for v in truth.values() for d in v})
    yolo, coco = tmp_path / "yolo", {"images": [], "annotations": [], "categories": [
        {"id": i, "name": n} for i, n in enumerate(names)]}
    yolo.mkdir()
    (yolo / "classes.txt").write_text("\n".join(names))
    for i, (rel, defects) in enumerate(truth.items()):
        lines = []
        coco["images"].append({"id": i, "file_name": rel})
        for d in defects:
            x0, y0, x1, y1 = d["box"]
            lines.append(f"{names.index(d['kind'])} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} "
                         f"{(x1 - x0) / w} {(y1 - y0) / h}")
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i,
                                        "category_id": names.index(d["kind"]),
                                        "bbox": [x0, y0, x1 - x0, y1 - y0]})
        (yolo / rel.replace(".png", ".txt")).write_text("\n".join(lines) + "\n")
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    results = {}
    for name, src in (("json", tmp_path / "in"), ("yolo", yolo), ("coco", tmp_path / "coco.json")):
        cfg = BatchConfig(tmp_path / "in", tmp_path / f"out_{name}", prompts=src,
                          engine="classic", quiet=True, no_store=True)
        results[name] = [(f.defect_class, f.measurements.area_px)
                         for r in run_batch(cfg).records for f in r.inspection.findings]
    assert results["json"] == results["coco"]
    assert [c for c, _ in results["yolo"]] == [c for c, _ in results["json"]]
    ya, ja = (np.array([a for _, a in results[k]]) for k in ("yolo", "json"))
    assert np.all(np.abs(ya - ja) <= 0.05 * ja + 5)  # float rounding of normalised boxes


def test_bad_prompt_files_name_the_file_and_the_problem(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"defects": [{"kind": "pit", "box": [5, 5, 2, 9]}]}))
    with pytest.raises(PromptFileError, match=r"a\.json.*x0 < x1"):
        read_json_prompts(p)
    t = tmp_path / "a.txt"
    t.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(PromptFileError, match=r"a\.txt:1"):
        read_yolo_prompts(t, None)
    t.write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(PromptFileError, match="only 2 class names"):
        read_yolo_prompts(t, ["a", "b"])


def test_recipe_prompts_relative_and_fiducial_frames(tmp_path):
    text = RECIPE.replace("mm_per_px = 0.05", "fiducial_diameter_mm = 2.0\n"
                          "fiducial_box = [10, 10, 50, 50]") + """
[[prompts]]
class = "pit"
box = [0.25, 0.25, 0.75, 0.75]
frame = "relative"
[[prompts]]
class = "scratch"
points = [[5, -3]]
frame = "fiducial"
"""
    r = parse_recipe(text)
    rel, fid = r.prompts
    p = rel.to_prompts((200, 400))
    assert p.boxes.tolist() == [[100, 50, 300, 150]]
    q = fid.to_prompts((200, 400), fiducial_xy=(30.0, 30.0))
    assert q.points.tolist() == [[35, 27]] and q.labels.tolist() == [1]
    with pytest.raises(ValueError, match="relative coordinates"):
        parse_recipe(text.replace("0.75, 0.75]", "1.5, 0.75]"))
    with pytest.raises(ValueError, match="fiducial frame needs"):
        parse_recipe(RECIPE + '[[prompts]]\nclass = "pit"\npoints = [[1, 1]]\n'
                     'frame = "fiducial"\n')


def test_recipe_prompts_run_on_every_image(tmp_path):
    write_parts(tmp_path / "in", 2)
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE + '[[prompts]]\nclass = "stain"\nbox = [0.1, 0.1, 0.4, 0.4]\n'
                      'frame = "relative"\n')
    result = run_batch(config(tmp_path, recipe=recipe))
    assert result.exit_code == 0
    for r in result.records:
        for f in r.inspection.findings:
            x0, y0, x1, y1 = f.measurements.bbox
            assert f.defect_class == "stain"
            assert x0 >= 32 - 1 and y0 >= 24 - 1 and x1 <= 128 + 1 and y1 <= 96 + 1


def test_missing_prompts_is_a_clear_error(tmp_path):
    write_parts(tmp_path / "in", 1)
    with pytest.raises(BatchError, match="no prompts"):
        run_batch(config(tmp_path))


class _PreparingEngine(ClassicEngine):
    """The classic engine with the encoder helper's prepare/set_prepared/set_images API."""

    def __init__(self):
        super().__init__()
        self.calls = {"prepare": 0, "set_prepared": 0, "set_images": 0}

    def prepare(self, image):
        self.calls["prepare"] += 1
        return ("prepared", image)

    def set_prepared(self, prepared):
        self.calls["set_prepared"] += 1
        return self.set_image(prepared[1])

    def set_images(self, images):
        self.calls["set_images"] += 1
        return [self.set_prepared(p) for p in images]


def test_pipeline_uses_prepare_and_batched_encoder_when_present(tmp_path):
    write_parts(tmp_path / "in", 5)
    eng = _PreparingEngine()
    result = run_batch(config(tmp_path, prompts=tmp_path / "in", batch_size=2), engine=eng)
    assert result.exit_code == 0 and len(result.records) == 5
    assert eng.calls["prepare"] == 5 and eng.calls["set_prepared"] == 5
    assert eng.calls["set_images"] == 2  # batches of 2, 2 and a single one


def test_sam_engine_plumbing_with_a_tiny_random_sam(tmp_path):
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.sam.backend import SamEngine
    from tests.sam_factory import tiny_sam

    write_parts(tmp_path / "in", 2)
    eng = SamEngine(tiny_sam(0), "tiny", device="cpu", cache=EmbeddingCache())
    result = run_batch(config(tmp_path, prompts=tmp_path / "in", overlays=True), engine=eng)
    assert result.exit_code == 0 and len(result.records) == 2
    for r in result.records:
        assert r.inspection.engine == "sam" and r.inspection.model_id == "tiny"
        assert (tmp_path / "out" / "overlays" / f"{r.out_stem}.png").exists()
        for f in r.inspection.findings:
            assert f.mask.shape == SIZE and f.mask.any() and f.score is not None


def test_cli_exit_codes(tmp_path, capsys):
    write_parts(tmp_path / "in", 2)
    args = ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--prompts",
            str(tmp_path / "in"), "--engine", "classic", "--quiet", "--no-store"]
    assert cli_main(args) == 0
    assert "reported" in capsys.readouterr().out
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert cli_main(args) == 1
    assert "bad.jpg" in json.loads((tmp_path / "out" / "summary.json").read_text()
                                   )["failed"][0]["path"]

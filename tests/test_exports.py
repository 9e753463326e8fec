"""Result files: permissions, label-map PNGs, the one COCO writer, all-or-nothing exports."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.inspection.findings import Finding, Inspection
from app.inspection.measure import measure
from app.outputs import atomic_write
from app.outputs.overlay import findings_label_map, label_map


@pytest.fixture()
def umask():
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    for p in (atomic_write.write_text(tmp_path / "a.json", "{}"),
              atomic_write.write_bytes(tmp_path / "sub" / "b.bin", b"x"),
              atomic_write.write_png(tmp_path / "c.png", np.zeros((4, 4), np.uint8))):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.json", "c.png", "sub"]  # no temps


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = atomic_write.write_text(tmp_path / "r.json", "old")

    def boom(*_a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write.write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def _mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_label_png_is_8_bit_with_the_defect_numbers_and_reads_with_the_default_flag(tmp_path):
    # defects 1 and 3 are left (2 was deleted): the labels are 1 and 3, not 1 and 2
    fs = [Finding("scratch", _mask((20, 30), 2, 6, 2, 10), number=1),
          Finding("pit", _mask((20, 30), 10, 15, 12, 20), number=3)]
    p = atomic_write.write_png(tmp_path / "m.png", findings_label_map(fs, (20, 30)))
    default = cv2.imread(str(p))  # IMREAD_COLOR: what most readers do first
    assert default[..., 0][fs[1].mask].tolist() == [3] * int(fs[1].mask.sum())
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 1, 3}


def test_label_map_switches_to_16_bit_only_above_255():
    masks = [_mask((4, 4), 0, 1, 0, 1)]
    assert label_map(masks, (4, 4), [255]).dtype == np.uint8
    big = label_map(masks, (4, 4), [256])
    assert big.dtype == np.uint16 and big[0, 0] == 256
    assert label_map([], (4, 4)).dtype == np.uint8


# ------------------------------------------------------------------------------ COCO


def _record(rel, findings, size=(40, 50), verdict=None):
    from app.batch.inspect_image import ImageRecord

    insp = Inspection(rel, "ab" * 16, findings=findings, verdict=verdict)
    return ImageRecord(rel, "k" + rel, Path(rel).stem, size, insp)


def _finding(cls, y0, y1, x0, x1, shape=(40, 50), **kw):
    m = _mask(shape, y0, y1, x0, x1)
    return Finding(cls, m, measure(m), 0.9, **kw)


def _ring(shape=(40, 50)):
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, (25, 20), 12, 1, -1)
    m[30:33, 2:12] = 1
    m[1, 48] = 1  # a single pixel
    return Finding("crack", m.astype(bool), measure(m.astype(bool)), 0.7)


def _load_coco(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools vs numpy 2
        return COCO(str(path))


@pytest.mark.parametrize("polygons", [False, True])
def test_batch_coco_loads_in_pycocotools_and_masks_round_trip(tmp_path, polygons):
    from app.batch.outputs import write_reports

    recs = [_record("sub/a.png", [_ring(), _finding("pit", 2, 8, 3, 9)]),
            _record("b.png", [], size=(30, 20))]
    write_reports(tmp_path, recs, polygons=polygons)
    coco = _load_coco(tmp_path / "coco.json")
    imgs = coco.loadImgs(coco.getImgIds())
    assert [(i["file_name"], i["height"], i["width"]) for i in imgs] == [
        ("sub/a.png", 40, 50), ("b.png", 30, 20)]  # relative; size also without defects
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["defect_number"] for a in anns] == [1, 2]
    for a, f in zip(anns, recs[0].inspection.findings, strict=True):
        assert isinstance(a["segmentation"], list) == polygons
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert np.array_equal(coco.annToMask(a).astype(bool), f.mask)
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"crack": 1, "pit": 2}


def test_category_ids_are_stable_across_exports(tmp_path):
    from app.batch.outputs import coco_dataset

    def ids(recs, order=()):
        return {c["name"]: c["id"] for c in coco_dataset(recs, order)["categories"]}

    only_crack = [_record("a.png", [_finding("crack", 2, 8, 3, 9)])]
    both = [_record("a.png", [_finding("scratch", 2, 8, 3, 9), _finding("crack", 9, 12, 3, 9)])]
    order = ("scratch", "pit", "crack")
    assert ids(only_crack, order)["crack"] == ids(both, order)["crack"] == 3  # recipe order
    assert ids(only_crack, order) == {"scratch": 1, "pit": 2, "crack": 3}  # all recipe classes
    other = [_record("a.png", [_finding("dent", 2, 8, 3, 9), _finding("bump", 9, 12, 3, 9)])]
    assert ids(other, order) == {"scratch": 1, "pit": 2, "crack": 3, "bump": 4, "dent": 5}
    assert ids(both) == {"crack": 1, "scratch": 2}  # no recipe: sorted names


def test_findings_csv_and_label_png_use_the_defect_number(tmp_path):
    import csv

    from app.batch.outputs import finding_rows, write_image_outputs

    f3 = _finding("pit", 2, 8, 3, 9, number=3)  # #1 and #2 were deleted
    rec = _record("a.png", [f3])
    assert [r["defect"] for r in finding_rows([rec])] == [3]
    write_image_outputs(tmp_path, rec)
    from app.batch.outputs import write_reports

    write_reports(tmp_path, [rec])
    assert [r["defect"] for r in csv.DictReader((tmp_path / "findings.csv").open())] == ["3"]
    assert json.loads((tmp_path / "coco.json").read_text())["annotations"][0][
        "defect_number"] == 3
    label = cv2.imread(str(tmp_path / "masks" / "a.png"))
    assert set(np.unique(label)) == {0, 3}


# ------------------------------------------------------------------------------ db export


def _db(tmp_path):
    from app.store import InspectionStore

    imgs = tmp_path / "images"
    (imgs / "lot1").mkdir(parents=True)
    for name, shape in (("lot1/a.png", (40, 50)), ("lot1/b.png", (30, 20)), ("c.jpg", (24, 36))):
        cv2.imwrite(str(imgs / name), np.zeros((*shape, 3), np.uint8))
    store = InspectionStore(tmp_path / "i.db")
    store.add_inspection(Inspection(str(imgs / "lot1/a.png"), "d1", lot="L",
                                    findings=[_ring(), _finding("pit", 2, 8, 3, 9)]))
    store.add_inspection(Inspection(str(imgs / "lot1/b.png"), "d2", lot="L"))  # no defects
    store.add_inspection(Inspection(str(imgs / "c.jpg"), "d3", lot="L"))
    return store, imgs


def _run_db(argv):
    import argparse

    from app.shell.commands import db as db_cmd

    parser = argparse.ArgumentParser(prog="sam-inspect")
    db_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_db_coco_has_relative_names_sizes_and_stable_ids(tmp_path):
    store, imgs = _db(tmp_path)
    store.close()
    recipe = tmp_path / "r.toml"
    recipe.write_text('schema_version = 1\n[part]\nname = "p"\nversion = "1"\n'
                      '[classes.pit]\n[classes.crack]\n')
    out = tmp_path / "coco.json"
    assert _run_db(["db", "--db", str(tmp_path / "i.db"), "export", "--format", "coco",
                    "-o", str(out), "--polygons", "--recipe", str(recipe)]) == 0
    coco = _load_coco(out)
    imgs_out = coco.loadImgs(coco.getImgIds())
    assert [(i["file_name"], i["height"], i["width"]) for i in imgs_out] == [
        ("lot1/a.png", 40, 50), ("lot1/b.png", 30, 20), ("c.jpg", 24, 36)]
    assert json.loads(out.read_text())["info"]["image_root"] == str(imgs)
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"pit": 1, "crack": 2}
    anns = coco.loadAnns(coco.getAnnIds())
    assert [a["defect_number"] for a in anns] == [1, 2]
    assert all(isinstance(a["segmentation"], list) for a in anns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert np.array_equal(coco.annToMask(anns[0]).astype(bool), _ring().mask)
    # the batch writer and db export agree (one writer)
    from app.batch.outputs import coco_dataset as batch_coco

    rec = _record("lot1/a.png", [_ring(), _finding("pit", 2, 8, 3, 9)])
    b = batch_coco([rec], ("pit", "crack"), polygons=True)
    assert [a["segmentation"] for a in b["annotations"]] == [a["segmentation"] for a in anns]


def test_db_coco_root_option_and_images_outside_it(tmp_path, capsys):
    store, imgs = _db(tmp_path)
    store.close()
    out = tmp_path / "coco.json"
    argv = ["db", "--db", str(tmp_path / "i.db"), "export", "--format", "coco", "-o", str(out)]
    assert _run_db([*argv, "--root", str(tmp_path)]) == 0
    assert [i["file_name"] for i in json.loads(out.read_text())["images"]][0] == \
        "images/lot1/a.png"
    out.unlink()
    from app.store import StoreError

    with pytest.raises(StoreError, match="not under the image root"):
        _run_db([*argv, "--root", str(imgs / "lot1")])
    assert not out.exists()


def test_size_of_a_defect_free_image_comes_from_the_same_pixels_elsewhere(tmp_path):
    from app.store.export import coco_from_inspections

    a = Inspection("gone/a.png", "same", findings=[_finding("pit", 2, 8, 3, 9)])
    again = Inspection("gone/a.png", "same")  # the image file is gone, but was inspected before
    data = coco_from_inspections([again, a])
    assert [(i["height"], i["width"]) for i in data["images"]] == [(40, 50), (40, 50)]
    from app.store import StoreError

    with pytest.raises(StoreError, match="size of gone/b.png is unknown"):
        coco_from_inspections([Inspection("gone/b.png", "other")])


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_db_export_that_fails_midway_writes_nothing(tmp_path, monkeypatch, capsys, fmt):
    from app.store import InspectionStore, StoreError

    store, _ = _db(tmp_path)
    store.close()
    real = InspectionStore.iter_inspections

    def damaged(self, **kw):
        it = real(self, **kw)
        yield next(it)
        raise StoreError("database disk image is malformed")

    monkeypatch.setattr(InspectionStore, "iter_inspections", damaged)
    out = tmp_path / "x" / f"export.{fmt}"
    argv = ["db", "--db", str(tmp_path / "i.db"), "export", "--format", fmt, "-o", str(out)]
    with pytest.raises(StoreError, match="malformed"):
        _run_db(argv)
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    if fmt == "csv":  # stdout gets nothing either (no header-only CSV)
        with pytest.raises(StoreError):
            _run_db(argv[:-2])
        assert capsys.readouterr().out == ""


def test_db_csv_has_the_defect_number(tmp_path):
    import csv

    store, _ = _db(tmp_path)
    store.close()
    out = tmp_path / "e.csv"
    assert _run_db(["db", "--db", str(tmp_path / "i.db"), "export", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["defect_number"] for r in rows] == ["1", "2", "", ""]


def test_batch_cli_coco_polygons_option(tmp_path):
    from app.shell.cli import main as cli_main
    from tests.batch_data import write_parts

    write_parts(tmp_path / "in", 2)
    args = ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--prompts",
            str(tmp_path / "in"), "--engine", "classic", "--quiet", "--no-store",
            "--coco-polygons"]
    assert cli_main(args) == 0
    coco = _load_coco(tmp_path / "out" / "coco.json")
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and all(isinstance(a["segmentation"], list) for a in anns)
    assert [i["file_name"] for i in coco.loadImgs(coco.getImgIds())] == [
        "part_00.png", "part_01.png"]

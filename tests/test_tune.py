"""Tuning: training data sources and their messages, the split, the registry, the gate."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from app.shell.cli import main as cli_main
from app.tuning.run import TuneRequest, tune
from sam_engine.errors import CheckpointError
from sam_engine.learned import registry
from sam_engine.learned.data import DataError, held_out_fraction, read_coco, read_folder, split
from sam_engine.learned.train import TrainSettings
from sam_engine.learned.weights import read_manifest
from tests.learned_support import blob_images, save_tiny, synthetic_images, write_pairs


# ------------------------------------------------------------------ sources
def test_folder_pairs_are_read_with_components_as_instances(tmp_path):
    images = synthetic_images(4, seed=1)
    data = read_folder(write_pairs(tmp_path / "site", images))
    assert len(data.images) == 4 and not data.problems
    assert data.n_instances >= sum(len(i.instances) for i in images) - 2  # touching pieces
    assert data.digest() == read_folder(tmp_path / "site").digest()


def test_missing_empty_and_mismatched_masks_each_get_a_message(tmp_path):
    folder = write_pairs(tmp_path / "site", synthetic_images(4, seed=2))
    (folder / "masks" / "p000.png").unlink()
    cv2.imwrite(str(folder / "masks" / "p001.png"), np.zeros((120, 160), np.uint8))
    cv2.imwrite(str(folder / "masks" / "p002.png"), np.full((60, 80), 255, np.uint8))
    data = read_folder(folder)
    assert len(data.images) == 1
    text = "\n".join(data.problems)
    assert "p000.png is missing" in text
    assert "p001.png: empty mask" in text
    assert "p002.png: mask is 80x60 but its image p002.png is 160x120" in text
    (folder / "masks" / "p003.png").unlink()
    with pytest.raises(DataError, match="no usable image/mask pair"):
        read_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected manifest.csv or images"):
        read_folder(tmp_path / "empty")


def test_coco_instances_are_read(tmp_path):
    from pycocotools import mask as mask_utils

    images = synthetic_images(2, seed=3)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "scratch"}]}
    for k, im in enumerate(images):
        cv2.imwrite(str(tmp_path / f"i{k}.png"), im.rgb[:, :, ::-1])
        coco["images"].append({"id": k, "file_name": f"i{k}.png", "height": im.size[0],
                               "width": im.size[1]})
        for inst in im.instances:
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": k,
                                        "category_id": 1, "segmentation": rle})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    data = read_coco(tmp_path / "coco.json")
    assert data.n_instances == sum(len(i.instances) for i in images)
    assert data.classes() == ["scratch"]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="needs 'images' and 'annotations'"):
        read_coco(tmp_path / "bad.json")


def test_split_is_deterministic_order_free_and_keeps_groups_together():
    images = blob_images(40, seed=4)
    a_train, a_test = split(images, 0.3)
    b_train, b_test = split(list(reversed(images)), 0.3)
    assert {i.digest for i in a_test} == {i.digest for i in b_test}
    assert 0 < len(a_test) < 40 and len(a_train) + len(a_test) == 40
    share = np.mean([held_out_fraction(str(k)) < 0.3 for k in range(5000)])
    assert abs(share - 0.3) < 0.02
    from dataclasses import replace

    grouped = [replace(im, group="g1") for im in images[:10]] + images[10:]
    tr, te = split(grouped, 0.5)
    sides = {("test" if any(i is g for g in te) else "train") for i in grouped[:10]}
    assert len(sides) == 1
    with pytest.raises(DataError, match="between 0 and 1"):
        split(images, 1.0)


# ------------------------------------------------------------------ registry
def test_registry_versions_promotions_and_the_way_back(tuned_registry):
    m1 = save_tiny(registry.model_dir("site", "1"), name="site", version="1")
    m2 = save_tiny(registry.model_dir("site", "2"), name="site", version="2", seed=1)
    assert registry.versions("site") == ["1", "2"] and registry.next_version("site") == "3"
    assert registry.resolve("site") == registry.model_dir("site", "2")
    assert registry.resolve("site@1") == registry.model_dir("site", "1")
    with pytest.raises(CheckpointError, match="known: site"):
        registry.resolve("other")
    registry.promote("partA", m1)
    registry.promote("partA", m2)
    assert registry.promoted_for("partA").model_id == "site@2"
    assert registry.demote("partA").model_id == "site@1"
    assert registry.demote("partA") is None
    with pytest.raises(CheckpointError, match="no tuned model is promoted"):
        registry.demote("partA")


# ------------------------------------------------------------------ the gate
def _request(data_dir, base, **kw):
    return TuneRequest(data=read_folder(data_dir), name="site", recipe="partA",
                       base=str(base), held_out=0.3,
                       settings=TrainSettings(steps=kw.pop("steps", 30), batch=8, lr=3e-3),
                       **kw)


def _no_rivals(monkeypatch):
    import app.tuning.run as run_mod

    monkeypatch.setattr(run_mod, "rivals", lambda *a, **k: {})


def test_a_better_model_is_promoted_and_recorded(tmp_path, monkeypatch):
    _no_rivals(monkeypatch)  # compared with the base alone here; rivals: the test below
    base = tmp_path / "base"
    save_tiny(base, name="base", version="1")
    data_dir = write_pairs(tmp_path / "site", blob_images(30, seed=5))
    out = tune(_request(data_dir, base, steps=60), progress=False)
    assert out.promoted, out.reason
    assert out.after.mean("box") > out.before.mean("box")
    assert registry.promoted_for("partA").model_id == "site@1"
    man = read_manifest(out.folder)
    assert man.base == "base@1" and man.data["images"] == 30
    assert set(man.split["held_out_images"]).isdisjoint(man.split["train_images"])
    assert man.metrics["gate"]["promoted"] and "held_out" in man.metrics


def test_the_gate_refuses_a_worse_model(tmp_path, monkeypatch):
    import torch

    import app.tuning.run as run_mod
    from sam_engine.learned.train import TrainReport

    _no_rivals(monkeypatch)
    base = tmp_path / "base"
    save_tiny(base, name="base", version="1")
    data_dir = write_pairs(tmp_path / "site", blob_images(24, seed=6))
    first = tune(_request(data_dir, base, steps=60), progress=False)
    assert first.promoted

    def ruined(model, *args, **kwargs):  # a "tuned" model that finds nothing
        with torch.no_grad():
            model.head.bias.fill_(-30.0)
        return TrainReport(steps=1, seconds=0.0, resumed_from=0, final_loss=1.0, losses=[])

    monkeypatch.setattr(run_mod, "train", ruined)
    out = tune(_request(data_dir, base), progress=False)
    assert out.current == "site@1"  # compared with the recipe's model in use
    assert not out.promoted and "not above the margin" in out.reason
    assert registry.promoted_for("partA").model_id == "site@1"  # unchanged
    assert registry.versions("site") == ["1", "2"]  # kept, not used
    assert read_manifest(out.folder).metrics["gate"]["promoted"] is False


def test_the_tuned_model_must_also_beat_the_engines_auto_falls_back_to(tmp_path,
                                                                      monkeypatch):
    import app.tuning.run as run_mod
    from sam_engine.learned.heldout import HeldOut

    images = blob_images(12, seed=8)
    measured = run_mod.rivals(images, set(), progress=False)
    assert list(measured) == ["classic"]  # no SAM checkpoint here
    assert measured["classic"].mean("box") > 0.5  # dark blobs: the classic engine does well
    perfect = HeldOut(classes=["blob"], ious={"box": [1.0], "point": [1.0]}, box_fill=[0.5])
    monkeypatch.setattr(run_mod, "rivals", lambda *a, **k: {"classic": perfect})
    base = tmp_path / "base"
    save_tiny(base, name="base", version="1")
    data_dir = write_pairs(tmp_path / "site", blob_images(24, seed=6))
    out = tune(_request(data_dir, base, steps=40), progress=False)
    assert not out.promoted
    assert "vs 1.000 for classic (best of " in out.reason and out.reason.endswith("0.000")
    assert registry.promoted_for("partA") is None
    assert read_manifest(out.folder).metrics["rivals"]["classic"]["all"]["box"] == 1.0


def test_tune_command_on_a_folder(tmp_path, capsys):
    base = tmp_path / "base"
    save_tiny(base, name="base", version="1")
    data_dir = write_pairs(tmp_path / "site", blob_images(16, seed=7))
    rc = cli_main(["tune", "--folder", str(data_dir), "--base", str(base), "--name", "lineA",
                   "--steps", "5", "--batch", "4", "--no-progress", "--margin", "5",
                   "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert rc == 3 and "lineA@1 kept, not used" in out
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["promoted"] is False and doc["after"]["all"]["n"] > 0
    assert cli_main(["tune", "--list"]) == 0
    assert "lineA@1" in capsys.readouterr().out


def test_tune_command_without_data_says_what_to_give(capsys):
    assert cli_main(["tune"]) == 2
    assert "--db DB, --coco FILE or --folder DIR" in capsys.readouterr().err


def test_empty_store_says_there_is_nothing_to_learn_from(tmp_path, capsys):
    from app.store.store import InspectionStore

    db = tmp_path / "inspections.db"
    InspectionStore(db).close()
    assert cli_main(["tune", "--db", str(db), "--recipe", "partA"]) == 2
    err = capsys.readouterr().err
    assert "no accepted defect to learn from among 0 inspections" in err
    assert "recipe partA" in err


def test_the_store_gives_accepted_defects_of_unchanged_images(tmp_path):
    from datetime import datetime, timedelta

    from app.inspection.findings import Finding, Inspection
    from app.store.store import InspectionStore
    from app.tuning.sources import StoreFilter, read_store
    from sam_engine.image_io import image_digest

    images = synthetic_images(3, seed=9)
    db = tmp_path / "inspections.db"
    store = InspectionStore(db)
    for k, im in enumerate(images):
        path = tmp_path / f"part{k}.png"
        cv2.imwrite(str(path), im.rgb[:, :, ::-1])
        findings = [Finding(inst.cls, inst.mask, accepted_by="ann" if k != 1 else None)
                    for inst in im.instances]
        store.add_inspection(Inspection(str(path), image_digest(im.rgb), recipe_name="partA",
                                        findings=findings))
    store.close()
    changed = tmp_path / "part2.png"
    cv2.imwrite(str(changed), 255 - images[2].rgb[:, :, ::-1])
    data = read_store(db, StoreFilter(recipe="partA",
                                      since=datetime.now() - timedelta(hours=1)))
    assert [im.source for im in data.images] == [str(tmp_path / "part0.png")]  # 1: unaccepted
    assert data.n_instances == len(images[0].instances)
    assert any("part2.png: the image changed since it was inspected" in p
               for p in data.problems)
    with pytest.raises(DataError, match="no accepted defect to learn from among 3 inspections"):
        read_store(db, StoreFilter(since=datetime.now() + timedelta(hours=1)))

"""Teach by example (sam_engine.finder.fewshot, features) and `sam-inspect teach`.

Synthetic: inclusions on a grainy surface (sam_engine.synthetic.hard), taught from one and
from five examples on other parts, measured on 8 parts with 2 inclusions each. Measured when
written: one example recall 0.45 / pixel IoU 0.41, five examples 0.50 / 0.45, no find on 6
clean parts; the floors below leave room. Real data (NEU-Seg, research only) is read in
place and the test skips without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.shell import cli
from sam_engine.errors import CheckpointError
from sam_engine.finder.features import (
    FEATURES_VERSION,
    FeatureMap,
    FeatureSettings,
    embedding_features,
    pixel_features,
)
from sam_engine.finder.fewshot import Example, TeachError, load_examples, teach
from sam_engine.finder.metrics import Tally, truth_from_instances
from sam_engine.finder.types import SOURCE_EXAMPLES
from sam_engine.learned import registry
from sam_engine.synthetic.hard import make_hard_part

SIZE = (160, 200)
KIND, TEXTURE = "inclusion", "grainy"


def part(seed: int, n: int):
    return make_hard_part(seed, size=SIZE, kinds=[KIND], n_defects=n, texture=TEXTURE,
                          colour=False)


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    out, seed = [], 10
    while len(out) < 5:
        p = part(seed, 1)
        seed += 1
        if p.instances:
            out.append(Example(p.image, p.instances[0].mask, KIND))
    return out


@pytest.fixture(scope="module")
def model(examples):
    return teach(examples[:1])


def measure(model) -> dict:
    t = Tally()
    for i in range(8):
        p = part(100 + i, 2)
        t.add(model.find(p.image), truth_from_instances(p.instances, SIZE), [KIND])
    return t.summary()["per_class"][KIND]


# ---------------------------------------------------------------- features
def test_features_are_normalised_per_image_and_flat_images_are_flat():
    p = part(10, 1)
    f = pixel_features(p.image)
    assert f.values.dtype == np.float32 and f.grid == SIZE and f.channels == len(f.names)
    assert np.abs(np.median(f.values.reshape(-1, f.channels), axis=0)).max() < 0.05
    darker = pixel_features((p.image * 0.6).astype(np.uint8))  # exposure: same features
    assert np.abs(darker.values - f.values).mean() < 0.15
    assert np.abs(pixel_features(np.full((50, 70, 3), 90, np.uint8)).values).max() < 0.01
    big = pixel_features(np.zeros((600, 900, 3), np.uint8), FeatureSettings(grid_side=128))
    assert big.grid == (85, 128) and big.to_image(np.ones(big.grid)).shape == (600, 900)


def test_embedding_features_keep_the_cells_over_the_image():
    emb = np.random.default_rng(0).normal(size=(1, 256, 64, 64)).astype(np.float32)
    f = embedding_features(emb, (100, 200), "sam-vit_b")
    assert f.grid == (32, 64) and f.channels == 256 and f.source == "sam-vit_b"


# ---------------------------------------------------------------- teaching and finding
def test_one_example_finds_the_same_kind_on_other_parts(model):
    s = measure(model)
    assert s["recall"] >= 0.3 and s["pixel_iou"] >= 0.3, s
    found = model.find(part(100, 2).image)
    assert found and all(f.source == SOURCE_EXAMPLES and f.cls == KIND for f in found)
    assert all(0.0 <= f.score <= 1.0 and f.mask.shape == SIZE for f in found)
    assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)


def test_more_examples_do_not_get_worse(model, examples):
    one, five = measure(model), measure(teach(examples))
    assert five["recall"] >= one["recall"] and five["pixel_iou"] >= one["pixel_iou"], (one, five)


def test_clean_uniform_and_empty_images_give_no_finds(model):
    for i in range(6):
        clean = make_hard_part(200 + i, size=SIZE, n_defects=0, texture=TEXTURE, colour=False)
        assert model.find(clean.image) == []
    for value in (0, 128, 255):
        assert model.find(np.full((120, 150, 3), value, np.uint8)) == []
    assert model.find(part(100, 2).image, wanted=[]) == []


def test_examples_of_two_classes_keep_their_classes(examples):
    scratch = make_hard_part(31, size=SIZE, kinds=["scratch"], n_defects=1, texture=TEXTURE,
                             colour=False)
    m = teach([examples[0], Example(scratch.image, scratch.instances[0].mask, "scratch")])
    assert m.classes == ("inclusion", "scratch")
    assert m.n_examples == {"inclusion": 1, "scratch": 1}
    assert all(f.cls == "inclusion" for f in m.find(part(100, 2).image, wanted=["inclusion"]))
    with pytest.raises(ValueError, match="never taught"):
        m.find(part(100, 2).image, wanted=["crack"])


def test_bad_examples_are_refused_with_a_reason(examples):
    rgb = examples[0].rgb
    with pytest.raises(TeachError, match="no examples"):
        teach([])
    with pytest.raises(TeachError, match="empty"):
        teach([Example(rgb, np.zeros(SIZE, bool), KIND)])
    with pytest.raises(TeachError, match="200x160"):
        teach([Example(rgb, np.ones((10, 10), bool), KIND)])


def test_another_feature_source_can_be_taught_and_is_checked(examples):
    def source(rgb):
        f = pixel_features(rgb)
        return FeatureMap(f.values, f.image_size, f.names, "custom")

    with pytest.raises(ValueError, match="feature_source"):
        teach(examples[:1], features=source)
    m = teach(examples[:1], features=source, feature_source="custom")
    img = part(100, 2).image
    assert m.find(img, features=source(img)) is not None
    with pytest.raises(ValueError, match="custom"):
        m.find(img)
    with pytest.raises(ValueError, match=FEATURES_VERSION):
        m.find(img, features=pixel_features(img))


# ---------------------------------------------------------------- saving
def test_save_load_round_trip_and_tampering_refused(model, tmp_path):
    manifest = model.save(tmp_path / "m", "ex", "1")
    assert manifest.net["kind"] == "examples" and len(manifest.weights_sha256) == 64
    back = load_examples(tmp_path / "m")
    img = part(101, 2).image
    a, b = model.find(img), back.find(img)
    assert len(a) == len(b) and all((x.mask == y.mask).all() for x, y in zip(a, b, strict=True))
    assert back.n_examples == model.n_examples and back.model_id == "ex@1"
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_examples(tmp_path / "m")


# ---------------------------------------------------------------- the CLI
def _write_example(tmp_path: Path, examples) -> tuple[Path, Path]:
    img, mask = tmp_path / "part.png", tmp_path / "part_mask.png"
    cv2.imwrite(str(img), cv2.cvtColor(examples[0].rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mask), examples[0].mask.astype(np.uint8) * 255)
    return img, mask


def test_cli_teach_from_one_example_saves_and_promotes(tmp_path, examples, capsys,
                                                        tuned_registry):
    img, mask = _write_example(tmp_path, examples)
    rc = cli.main(["teach", "--class", KIND, "--example", str(img), "--mask", str(mask),
                   "--recipe-name", "bracket"])
    out = capsys.readouterr().out
    assert rc == 0 and "bracket-examples@1" in out and "1 examples" in out
    promo = registry.promoted_for("bracket", section="examples")
    assert promo is not None and promo.model_id == "bracket-examples@1"
    assert load_examples(registry.model_dir("bracket-examples", "1")).classes == (KIND,)
    assert registry.versions("bracket") == []  # the recipe's own name is its prompt model's


def test_cli_teach_from_the_store_takes_accepted_defects_of_the_recipe(tmp_path, examples,
                                                                       capsys):
    from app.inspection.findings import Finding, Inspection
    from app.store.store import InspectionStore
    from sam_engine.image_io import image_digest

    db = tmp_path / "inspections.db"
    store = InspectionStore(db)
    for k, ex in enumerate(examples[:3]):
        path = tmp_path / f"part{k}.png"
        cv2.imwrite(str(path), cv2.cvtColor(ex.rgb, cv2.COLOR_RGB2BGR))
        store.add_inspection(Inspection(str(path), image_digest(ex.rgb), recipe_name="partA",
                                        findings=[Finding(KIND, ex.mask, accepted_by="ann")]))
    store.close()
    assert cli.main(["teach", "--class", KIND, "--db", str(db), "--recipe", "partA",
                     "--max", "2"]) == 0
    out = capsys.readouterr().out
    assert "partA-examples@1" in out and "2 examples" in out and "now finds inclusion" in out
    assert registry.promoted_for("partA", section="examples").model_id == "partA-examples@1"


def test_cli_teach_refuses_bad_input(tmp_path, examples, capsys):
    img, mask = _write_example(tmp_path, examples)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros(SIZE, np.uint8))
    cases = [(["--example", str(img), "--mask", str(empty)], "empty"),
             (["--example", str(img), "--mask", str(tmp_path / "nope.png")], "not found"),
             (["--example", str(img)], "--mask"),
             (["--folder", str(tmp_path / "nowhere")], "not a folder")]
    for extra, message in cases:
        assert cli.main(["teach", "--class", KIND, *extra]) == 2
        assert message in capsys.readouterr().err
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    cv2.imwrite(str(folder / "images" / "a.png"), examples[0].rgb)
    cv2.imwrite(str(folder / "masks" / "a.png"), examples[0].mask.astype(np.uint8) * 255)
    assert cli.main(["teach", "--class", "crack", "--folder", str(folder)]) == 2
    assert "no example of crack" in capsys.readouterr().err


# ---------------------------------------------------------------- real images (research-only)
def defects_dir() -> Path:
    env = os.environ.get("SAM_INSPECT_DEFECTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"


@pytest.mark.skipif(not (defects_dir() / "manifest.csv").is_file(),
                    reason="shared/data/defects is not present")
def test_neu_one_example_per_class_finds_defects_on_held_out_images():
    from sam_engine.learned.data import read_folder, split

    data = read_folder(defects_dir(), dataset="neu_seg")
    train, held = split(data.images, 0.5, salt="neu_seg")
    rng = np.random.default_rng(0)
    examples, test = [], []
    for cls in ("inclusion", "patches", "scratches"):
        mine = [i for i in train if i.instances[0].cls == cls]
        im = mine[int(rng.integers(0, len(mine)))]
        examples.append(Example(im.rgb, np.logical_or.reduce([i.mask for i in im.instances]),
                                cls))
        test += [i for i in held if i.instances[0].cls == cls][:20]
    m = teach(examples)
    t = Tally()
    for im in test:
        t.add(m.find(im.rgb), truth_from_instances(im.instances, im.size), m.classes)
    matched = sum(c.matched_truth for c in t.per_class.values())
    assert matched > 0, t.summary()

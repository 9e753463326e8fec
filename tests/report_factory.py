"""Known inspections and tiny Llama report models for the report tests (seconds on a CPU)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import cv2

from app.inspection.findings import FAIL, Finding, Inspection, Reason, Verdict
from app.inspection.measure import Measurements, measure
from app.inspection.recipe import load_recipe
from app.inspection.verdict import judge
from sam_engine.image_io import image_digest, load_image

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
RECIPE = SAMPLES / "recipes" / "demo_part.toml"


def known_inspection() -> Inspection:
    """A FAIL inspection with two defects whose numbers are chosen by hand."""
    mm = 0.05
    scratch = Measurements(area_px=400, bbox=(100, 100, 170, 106), centroid=(135.0, 103.0),
                           feret_max_px=70.0, min_width_px=6.0, thickness_px=6.0,
                           perimeter_px=150.0, n_parts=1, mm_per_px=mm)  # 3.50 mm, 0.30 mm
    pit = Measurements(area_px=120, bbox=(300, 300, 312, 312), centroid=(306.0, 306.0),
                       feret_max_px=12.0, min_width_px=11.0, thickness_px=11.0,
                       perimeter_px=40.0, n_parts=1, mm_per_px=mm)  # 0.60 mm, area 0.30 mm²
    findings = [Finding("scratch", None, scratch, 0.93), Finding("pit", None, pit, 0.88)]
    verdict = Verdict(FAIL, (Reason("max_length", "scratch", "scratch #1: length 3.5 mm > "
                                    "allowed 3 mm", 3.5, 3.0, "mm", 1),))
    return Inspection(
        image_path="part_x.png", image_sha256="ab" * 32, part_id="P-4711", serial="SN778899",
        lot="L2507-3", station="ST-4", operator="J. Müller",
        time=datetime(2025, 7, 1, 8, 30, tzinfo=UTC), engine="sam", model_id="vit_b",
        recipe_name="demo_part", recipe_version="1.0.0", findings=findings, verdict=verdict)


def sample_inspection(name: str = "part_01_metal") -> Inspection:
    """A sample part with its ground-truth masks as findings, measured and judged."""
    recipe = load_recipe(RECIPE)
    side = json.loads((SAMPLES / f"{name}.json").read_text())
    gt = cv2.imread(str(SAMPLES / "gt" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    findings = []
    for i, d in enumerate(side["defects"]):
        mask = gt == i + 1
        findings.append(Finding(d["kind"], mask, measure(mask, recipe.calibrate(),
                                                         datum=recipe.datum), 0.9))
    rgb = load_image(SAMPLES / f"{name}.png")
    return Inspection(
        image_path=f"{name}.png", image_sha256=image_digest(rgb), part_id=name, serial="SN1",
        lot="demo", station="ST-1", operator="tester", engine="classic",
        recipe_name=recipe.name, recipe_version=recipe.version, findings=findings,
        verdict=judge(findings, recipe))


HEADERS = {"en": "Report:", "de": "Bericht:", "de_terse": "Bericht:"}


def tiny_model_dir(tmp: Path, pairs: list[dict], steps: int = 120, seed: int = 0,
                   hidden: int = 64, layers: int = 2) -> Path:
    """Train a very small Llama on pairs and save it with its tokenizer. English pairs are
    prompted with "Report:", German ones with "Bericht:" (as in demo_model.py), so the model
    knows both languages but answers the usual "Report:" prompt in English."""
    from app.report.data_builder import pair_facts
    from app.report.demo_model import tiny_llama, train_tokenizer
    from app.report.llama import build_prompt
    from app.report.train import TrainSettings, encode, fit, split

    corpus = [build_prompt(pair_facts(p)) + p["report"] for p in pairs]
    prompts = [build_prompt(pair_facts(p), HEADERS[p["style"]]) for p in pairs]
    tokenizer = train_tokenizer(corpus, vocab_size=400)
    model = tiny_llama(tokenizer, hidden=hidden, layers=layers, heads=4,
                       intermediate=2 * hidden, seed=seed)
    examples = [encode(tokenizer, q, p["report"], 384) for q, p in zip(prompts, pairs, strict=True)]
    train, val = split(examples, 0.1, seed)
    fit(model, train, val, TrainSettings(lr=5e-3, batch_size=16, grad_accum=1, max_steps=steps,
                                         eval_every=1000, seed=seed), tokenizer.pad_token_id,
        progress=False)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


def pairs_for(style: str, n: int, seed: int) -> list[dict]:
    from app.report.data_builder import build_pairs

    pairs, _ = build_pairs(n, (style,), seed=seed, max_candidates=20 * n)
    random.Random(seed).shuffle(pairs)
    return pairs

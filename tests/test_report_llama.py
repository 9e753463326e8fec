"""Llama report path with tiny in-test models: offline loading, LoRA training lowers the
validation loss and changes the style, adapter round trip, broken folders fall back."""

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from app.report.data_builder import pair_facts  # noqa: E402
from app.report.evaluate import evaluate_writer  # noqa: E402
from app.report.generate import GENERATED, REPAIRED, TEMPLATE, build_report  # noqa: E402
from app.report.llama import (  # noqa: E402
    LlamaReportWriter,
    ReportModelError,
    build_prompt,
    load_base,
    load_writer,
)
from app.report.train import (  # noqa: E402
    TrainSettings,
    encode,
    save_adapter,
    train_lora,
    validation_loss,
)
from tests.report_factory import known_inspection, pairs_for, tiny_model_dir  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a busy CPU
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    en = pairs_for("en", 60, seed=11)
    terse = pairs_for("de_terse", 90, seed=12)
    return {"en": en, "de_terse_base": terse[:30], "de_terse_train": terse[30:78],
            "de_terse_test": terse[78:84]}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, data):
    # English under "Report:", terse German under "Bericht:" (other findings than the adapter's)
    return tiny_model_dir(tmp_path_factory.mktemp("base"), data["en"] + data["de_terse_base"],
                          steps=150)


def test_loads_offline_and_writes_a_checked_narrative(base_dir):
    writer = load_writer(base_dir, device="cpu")
    assert writer.prompt_format == "plain" and "Llama model" in writer.description
    report = build_report(known_inspection(), writer=writer)
    nar = report.narrative
    assert nar.status in (GENERATED, REPAIRED, TEMPLATE)
    assert nar.final_check.passed  # whatever the model wrote, the report states only facts
    assert nar.model_check is not None and 0.0 <= nar.model_check.accuracy <= 1.0
    assert nar.tokens_per_s > 0


def test_lora_lowers_validation_loss_and_changes_the_style(base_dir, data, tmp_path):
    model, tok = load_base(base_dir, "cpu")
    settings = TrainSettings(target_modules="all-linear", lr=5e-3, batch_size=8, grad_accum=1,
                             max_steps=60, eval_every=20, patience=3, val_fraction=0.15)
    peft_model, result = train_lora(model, tok, data["de_terse_train"], settings, progress=False)
    assert result.best_val_loss < 0.8 * result.initial_val_loss
    assert 0 < result.trainable_share < 0.5
    save_adapter(peft_model, tmp_path / "ad", base=base_dir, settings=settings, result=result,
                 style="de_terse", lang="de")
    refs = data["de_terse_test"]
    with peft_model.disable_adapter():
        base_score = evaluate_writer(LlamaReportWriter(peft_model, tok, base=base_dir), refs,
                                     max_new_tokens=120).rouge_l
    adapted = load_writer(base_dir, tmp_path / "ad", device="cpu")
    assert adapted.lang == "de"
    ad_score = evaluate_writer(adapted, refs, max_new_tokens=120).rouge_l
    assert ad_score > base_score + 0.05, (ad_score, base_score)


def test_adapter_round_trip_gives_identical_logits(base_dir, data, tmp_path):
    model, tok = load_base(base_dir, "cpu")
    settings = TrainSettings(r=4, alpha=8, lr=1e-2, batch_size=8, grad_accum=1, max_steps=3,
                             eval_every=100, val_fraction=0.2)
    peft_model, result = train_lora(model, tok, data["de_terse_train"][:10], settings,
                                    progress=False)
    peft_model.eval()
    ids, _ = encode(tok, build_prompt(pair_facts(data["en"][0])), data["en"][0]["report"], 256)
    x = torch.tensor([ids])
    with torch.no_grad():
        before = peft_model(input_ids=x).logits
        with peft_model.disable_adapter():
            plain = peft_model(input_ids=x).logits
    assert not torch.equal(before, plain)  # the adapter does something
    save_adapter(peft_model, tmp_path / "ad", base=base_dir, settings=settings, result=result,
                 style="en", lang="en")
    meta = json.loads((tmp_path / "ad" / "report_adapter.json").read_text())
    assert meta["settings"]["target_modules"] == ["q_proj", "v_proj"] and meta["steps"] == 3
    loaded = load_writer(base_dir, tmp_path / "ad", device="cpu").model
    with torch.no_grad():
        after = loaded(input_ids=x).logits
    assert torch.equal(before, after)


def test_validation_loss_ignores_the_prompt(base_dir, data):
    model, tok = load_base(base_dir, "cpu")
    ex = [encode(tok, build_prompt(pair_facts(p)), p["report"], 256) for p in data["en"][:4]]
    assert all(labels[0] == -100 for _, labels in ex)
    assert validation_loss(model, ex, tok.pad_token_id) > 0


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportModelError, match="no such model folder"):
        load_writer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportModelError, match="config.json is missing"):
        load_writer(tmp_path / "empty")


def test_corrupt_weights_are_a_clear_error(base_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in base_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ReportModelError, match="cannot load the model.*copy the folder again"):
        load_writer(bad)
    with pytest.raises(ReportModelError, match="no adapter_config.json"):
        load_writer(base_dir, tmp_path)
    cfg = json.loads((base_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ReportModelError, match="Llama-architecture"):
        load_writer(bad)


def test_a_failing_model_falls_back_to_the_template():
    class Broken:
        description, adapter, lang = "broken model", None, "en"

        def write(self, facts, max_new_tokens=200):
            raise RuntimeError("CUDA out of memory")

    nar = build_report(known_inspection(), writer=Broken()).narrative
    assert nar.status == TEMPLATE and "model failed" in nar.note and nar.final_check.passed


DEMO = Path(__file__).resolve().parents[1] / "models" / "report-demo"


@pytest.mark.skipif(not (DEMO / "config.json").is_file(), reason="no demo report model")
def test_shipped_demo_model_and_adapter_write_checked_reports_in_two_styles():
    insp = known_inspection()
    base = build_report(insp, writer=load_writer(DEMO, device="cpu")).narrative
    terse = build_report(insp, writer=load_writer(DEMO, DEMO / "adapter-de-terse",
                                                  device="cpu")).narrative
    assert base.final_check.passed and terse.final_check.passed
    assert terse.style == "de_terse" and "Ergebnis: FAIL" in terse.text
    assert "does not conform" in base.text or "FAIL" in base.text
    assert "Kratzer" in terse.text and "Kratzer" not in base.text

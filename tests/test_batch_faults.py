"""Kill a 3-image batch (SIGKILL at each named fault point, app.batch.faults), rerun it, and
compare with an uninterrupted run: nothing lost, nothing stored, reported or marked done twice;
also when the rerun follows a change of settings (the lot) over an earlier complete run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.batch import BatchConfig, run_batch
from app.batch.faults import ENV, STEPS
from app.outputs.atomic_write import is_temporary
from tests.batch_data import write_parts

REPO = Path(__file__).resolve().parents[1]
N = 3
CHILD = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from app.batch import BatchConfig, run_batch
run_batch(BatchConfig(Path({inp!r}), Path({out!r}), prompts=Path({inp!r}), engine="classic",
                      quiet=True, lot={lot!r}, force={force!r}))
"""
# per-image steps are hit once per image: kill on the second image; the others once per run
KILLS = [f"{s}:2" if s not in ("after_lock", "after_reports") else s for s in STEPS]


def cfg(inp: Path, out: Path, lot: str = "") -> BatchConfig:
    return BatchConfig(inp, out, prompts=inp, engine="classic", quiet=True, lot=lot)


def killed_run(inp: Path, out: Path, fault: str, lot: str = "", force: bool = False) -> None:
    code = CHILD.format(repo=str(REPO), inp=str(inp), out=str(out), lot=lot, force=force)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, ENV: fault},
                          capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def comparable(records) -> list[dict]:
    out = []
    for r in records:
        d = r.to_dict()
        d.pop("seconds")
        d["inspection"].pop("time")
        out.append(d)
    return out


def done_per_image(out: Path) -> Counter:
    """How many "done" lines each (key, image) has in the ledger."""
    n = Counter()
    for line in (out / "ledger.jsonl").read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("event") == "done":
            n[(e["key"], e["rel"])] += 1
    return n


def stored(out: Path) -> Counter:
    """(image path, lot) of every stored inspection (sqlite3: the store is under test)."""
    with contextlib.closing(sqlite3.connect(out / "inspections.db")) as db:
        return Counter(db.execute("SELECT image_path, lot FROM inspections"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The input folder, and uninterrupted runs with lot A and lot B."""
    tmp = tmp_path_factory.mktemp("faults")
    write_parts(tmp / "in", N, seed=5)
    runs = {lot: run_batch(cfg(tmp / "in", tmp / f"ref_{lot}", lot)) for lot in ("A", "B")}
    return tmp, runs


def check_like_uninterrupted(inp: Path, out: Path, ref, lots: tuple[str, ...]) -> None:
    resumed = run_batch(cfg(inp, out, lots[-1]))
    assert resumed.exit_code == 0
    assert comparable(resumed.records) == comparable(ref.records)
    for name in ("findings.csv", "findings.jsonl", "coco.json"):
        assert (out / name).read_text() == (inp.parent / f"ref_{lots[-1]}" / name).read_text()
    assert json.loads((out / "summary.json").read_text())["images_reported"] == N
    paths = sorted(str(inp / r.rel) for r in ref.records)
    assert stored(out) == Counter({(p, lot): 1 for p in paths for lot in lots})  # once each
    done = done_per_image(out)
    assert sorted(rel for _, rel in done) == sorted([r.rel for r in ref.records] * len(lots))
    assert set(done.values()) == {1}
    assert not [p for p in out.rglob("*") if is_temporary(p.name)]


@pytest.mark.parametrize("fault", KILLS)
def test_kill_at_each_step_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, fault):
    tmp, runs = reference
    out = tmp_path / "out"
    killed_run(tmp / "in", out, fault, lot="A")
    check_like_uninterrupted(tmp / "in", out, runs["A"], ("A",))


@pytest.mark.parametrize("fault", ["after_outputs:2", "after_storing:2",
                                   "after_store_commit:2", "after_done:2"])
def test_kill_after_a_settings_change_loses_and_duplicates_nothing(reference, tmp_path, fault):
    """A complete run with lot A, then lot B killed mid-way and rerun: the store holds every
    image once per lot (the lot-A inspection does not stand in for the missing lot-B one)."""
    tmp, runs = reference
    out = tmp_path / "out"
    shutil.copytree(tmp / "ref_A", out)
    killed_run(tmp / "in", out, fault, lot="B")
    check_like_uninterrupted(tmp / "in", out, runs["B"], ("A", "B"))


def test_unknown_fault_step_is_a_clear_error(tmp_path, monkeypatch):
    from app.batch.runner import BatchError

    write_parts(tmp_path / "in", 1)
    monkeypatch.setenv(ENV, "after_lunch")
    with pytest.raises(BatchError, match="after_lunch.*after_outputs"):
        run_batch(cfg(tmp_path / "in", tmp_path / "out"))



def test_forced_redo_under_unchanged_settings_stores_nothing_twice(reference, tmp_path):
    """--force redoes the files; the store keeps one inspection per ledger key."""
    tmp, runs = reference
    out = tmp_path / "out"
    shutil.copytree(tmp / "ref_A", out)
    again = run_batch(BatchConfig(tmp / "in", out, prompts=tmp / "in", engine="classic",
                                  quiet=True, lot="A", force=True))
    assert again.summary["images_inspected"] == N
    assert comparable(again.records) == comparable(runs["A"].records)
    assert stored(out) == Counter({(str(tmp / "in" / r.rel), "A"): 1 for r in runs["A"].records})


def test_lost_or_damaged_ledger_and_a_store_missing_done_images(reference, tmp_path, caplog):
    """The store is the source of truth: a garbage ledger redoes the images without storing
    them twice, and images the ledger calls done but the store lacks are inspected again."""
    tmp, runs = reference
    paths = sorted(str(tmp / "in" / r.rel) for r in runs["A"].records)
    out = tmp_path / "out"
    shutil.copytree(tmp / "ref_A", out)
    (out / "ledger.jsonl").write_text("garbage\n" * 5)
    again = run_batch(cfg(tmp / "in", out, "A"))
    assert again.exit_code == 0 and again.summary["images_inspected"] == N
    assert stored(out) == Counter({(p, "A"): 1 for p in paths})
    assert "5 unreadable lines" in caplog.text

    with contextlib.closing(sqlite3.connect(out / "inspections.db")) as db:
        db.execute("PRAGMA foreign_keys = ON")  # its defects and reasons go with it
        db.execute("DELETE FROM inspections WHERE image_path = ?", (paths[0],))
        db.commit()
    caplog.clear()
    third = run_batch(cfg(tmp / "in", out, "A"))
    assert third.exit_code == 0 and third.summary["images_inspected"] == 1
    assert "its inspection is not in the store" in caplog.text
    assert stored(out) == Counter({(p, "A"): 1 for p in paths})
    assert comparable(third.records) == comparable(runs["A"].records)

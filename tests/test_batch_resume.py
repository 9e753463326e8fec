"""Kill a batch run (SIGKILL, in a subprocess) mid-way, rerun it, compare with an uninterrupted
run: nothing reported done is lost, nothing is stored twice, the results are the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.batch import BatchConfig, run_batch
from app.store import InspectionStore
from tests.batch_data import write_parts

REPO = Path(__file__).resolve().parents[1]
N = 14

# A run in a child process whose encoder is slowed down, so the kill lands mid-way.
CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from app.batch import BatchConfig, run_batch
from sam_engine.classic import ClassicEngine

class SlowEngine(ClassicEngine):
    def set_image(self, image):
        time.sleep(0.25)
        return super().set_image(image)

run_batch(BatchConfig(Path({inp!r}), Path({out!r}), prompts=Path({inp!r}), quiet=True),
          engine=SlowEngine())
"""


def done_lines(out: Path) -> int:
    ledger = out / "ledger.jsonl"
    if not ledger.exists():
        return 0
    return ledger.read_bytes().count(b'"event": "done"')


def comparable(result) -> list[dict]:
    """Records without the things that differ between runs (time, timings)."""
    out = []
    for r in result.records:
        d = r.to_dict()
        d.pop("seconds")
        d["inspection"].pop("time")
        out.append(d)
    return out


@pytest.mark.slow
def test_kill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    inp = tmp_path / "in"
    write_parts(inp, N, seed=3)
    killed = tmp_path / "killed"
    code = CHILD.format(repo=str(REPO), inp=str(inp), out=str(killed))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while done_lines(killed) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    reported = done_lines(killed)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 4 <= reported < N, "the kill should land mid-run"

    resumed = run_batch(BatchConfig(inp, killed, prompts=inp, engine="classic", quiet=True))
    assert resumed.summary["images_skipped"] >= reported  # nothing reported done is redone...
    assert resumed.summary["images_reported"] == N  # ...or lost
    fresh = run_batch(BatchConfig(inp, tmp_path / "fresh", prompts=inp, engine="classic",
                                  quiet=True))
    assert comparable(resumed) == comparable(fresh)
    for name in ("findings.csv", "findings.jsonl", "coco.json"):
        assert (killed / name).read_text() == (tmp_path / "fresh" / name).read_text(), name
    with InspectionStore(killed / "inspections.db") as store:
        paths = [i.image_path for i in store.iter_inspections()]
    assert sorted(paths) == sorted({str(inp / r.rel) for r in fresh.records})  # once each
    assert json.loads((killed / "summary.json").read_text())["images_reported"] == N


def test_image_stored_just_before_a_kill_is_not_stored_twice(tmp_path):
    """A kill between the store transaction and the ledger's "done" line: the rerun redoes the
    image's files but finds its inspection already stored."""
    inp = tmp_path / "in"
    write_parts(inp, 2)
    out = tmp_path / "out"
    run_batch(BatchConfig(inp, out, prompts=inp, engine="classic", quiet=True))
    ledger = out / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    last_done = max(i for i, line in enumerate(lines) if '"done"' in line)
    ledger.write_text("\n".join(lines[:last_done]) + "\n" + lines[last_done][:17])  # cut line
    again = run_batch(BatchConfig(inp, out, prompts=inp, engine="classic", quiet=True))
    assert again.summary["images_inspected"] == 1 and again.summary["images_reported"] == 2
    with InspectionStore(out / "inspections.db") as store:
        assert len(list(store.iter_inspections())) == 2

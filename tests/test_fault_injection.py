"""Fault injection (benchmarks/fault_injection.py), fast subset: bad input, corrupt files of each
kind, kills at fault points of a batch run and two writers, each through the real CLI in a
subprocess. None may print a traceback, give a silently wrong result or lose a result; the
full sweep and its table: `python benchmarks/fault_injection.py`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("fault_injection",
                                                  REPO / "benchmarks" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_injection", module)
    spec.loader.exec_module(module)
    return module


FI = _harness()
FAST = [s for s in FI.SCENARIOS if s.fast]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return FI.Workspace(tmp_path_factory.mktemp("fault_injection"))


@pytest.mark.parametrize("scenario", FAST, ids=[s.name for s in FAST])
def test_fault_is_handled(workspace, scenario):
    if not FI.available(scenario):
        pytest.skip(f"needs {', '.join(scenario.needs)}")
    result = FI.run_scenario(workspace, scenario)
    assert result.outcome not in FI.BAD, f"{result.outcome}: {result.detail}"
    if scenario.group == "kill":
        assert result.outcome == "survived", result.detail


def test_classification():
    ok = FI.Proc([], 0, "", "", 0.0)
    assert FI.classify(ok, ("a.png",), lambda: True) == "recovered"
    assert FI.classify(ok, ("a.png",), lambda: False) == "silent wrong"
    assert FI.classify(ok, ("a.png",), None) == "silent wrong"  # a bad input accepted
    err = FI.Proc([], 2, "", "sam-inspect: error: cannot decode a.png", 0.0)
    assert FI.classify(err, ("a.png",), None) == "clear error"
    assert FI.classify(err, ("b.png",), None) == "vague error"
    tb = FI.Proc([], 1, "", "Traceback (most recent call last):\n  ...", 0.0)
    assert FI.classify(tb, ("a.png",), None) == "traceback"


def test_every_fault_point_has_a_kill_scenario():
    from app.batch import faults

    names = {s.name for s in FI.SCENARIOS if s.group == "kill"}
    assert all(any(f"kill at {step}:" in n for n in names) for step in faults.STEPS)


def test_plain_pytest_without_a_display_runs_the_qt_tests(tmp_path):
    """No QT_QPA_PLATFORM and no display: tests/conftest.py makes Qt draw offscreen (before, Qt
    aborted the whole pytest process when the first window test ran)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_gui_window.py::test_drag_box_gives_mask_at_the_defect_and_enter_saves_it"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout

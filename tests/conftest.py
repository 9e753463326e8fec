"""Test-session setup: Qt draws offscreen unless the caller chose a platform.

Set before any test module imports PySide6, so plain `pytest` (no QT_QPA_PLATFORM in the
environment, no display) does not abort the whole run when Qt cannot open a display. Tests
that need a real X server (tests/test_gui_xvfb.py) set QT_QPA_PLATFORM=xcb in their own
subprocess environment.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")



@pytest.fixture
def make_window(qtbot, tmp_path):
    """A factory of shown main windows on a folder (the classic engine unless one is given),
    each with its own settings file and, unless given, OUT/inspections.db under tmp_path."""
    from app.gui.main_window import MainWindow
    from app.gui.options import GuiOptions
    from app.gui.settings import Settings
    from sam_engine.classic import ClassicEngine

    def make(folder, engine=None, recipe=None, prefetch=2, settings=None, db=None):
        eng = engine if engine is not None else ClassicEngine()
        opts = GuiOptions(folder=folder, db=str(db or tmp_path / "inspections.db"),
                          recipe=recipe, prefetch=prefetch, operator="tester")
        w = MainWindow(opts, engine_factory=lambda: eng,
                       settings=settings or Settings.at(tmp_path / "settings.ini"))
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        w.activateWindow()
        return w

    return make


@pytest.fixture(autouse=True)
def tuned_registry(tmp_path_factory, monkeypatch):
    """Every test gets an empty tuned-model registry of its own (never the user's)."""
    root = tmp_path_factory.mktemp("tuned")
    monkeypatch.setenv("SAM_INSPECT_TUNED", str(root))
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tiny models: two threads on a loaded 2-core machine
    are many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

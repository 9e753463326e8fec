"""Test-session setup: Qt draws offscreen unless the caller chose a platform.

Set before any test module imports PySide6, so plain `pytest` (no QT_QPA_PLATFORM in the
environment, no display) does not abort the whole run when Qt cannot open a display. Tests
that need a real X server (tests/test_gui_xvfb.py) set QT_QPA_PLATFORM=xcb in their own
subprocess environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


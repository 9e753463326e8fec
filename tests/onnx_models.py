"""One tiny-SAM ONNX export per test session, shared by the ONNX test modules (it takes seconds)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from sam_engine.onnx.export import ExportOptions, ExportResult, export_onnx
from tests.sam_factory import tiny_sam

SEED = 3


@lru_cache(maxsize=1)
def exported() -> ExportResult:
    """tiny_sam(SEED) exported with encoder and int8 copies into a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="sam_onnx_test_"))
    atexit.register(shutil.rmtree, out, True)
    return export_onnx(tiny_sam(SEED), "tiny", out, checkpoint_sha256="0" * 64,
                       options=ExportOptions(encoder=True, quantize=True, verify_cases=4))


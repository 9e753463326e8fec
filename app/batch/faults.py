"""Named fault points: places in a batch run where a test can kill the process (SIGKILL).

Set SAM_INSPECT_FAULT=STEP (the first time the run reaches STEP) or STEP:N (the N-th time) and
the process kills itself there, with no cleanup, as a power cut or an OOM kill would. Unset, a
fault point costs one comparison. The steps, in the order one image passes them:

  after_lock          the output folder is locked and stale temporaries are removed (once)
  after_encode        the encoder has produced the image's embedding (encoder thread)
  after_outputs       mask PNG, overlay and record JSON are written
  after_storing       the ledger's "storing" line is on disk, the store transaction not begun
  after_store_commit  the inspection store transaction is committed
  after_done          the ledger's "done" line is on disk
  after_reports       coco.json, findings.csv/.jsonl and the per-image reports are written,
                      summary.json not yet (once, at the end of the run)

A rerun after a kill at any of them must give the results of an uninterrupted run: nothing
lost, nothing stored or reported twice (tests/test_batch_faults.py).
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "SAM_INSPECT_FAULT"
STEPS = ("after_lock", "after_encode", "after_outputs", "after_storing", "after_store_commit",
         "after_done", "after_reports")

_armed: tuple[str, int] | None = None
_count = 0
_lock = threading.Lock()


def arm_from_env() -> None:
    """Read SAM_INSPECT_FAULT (called when a run starts); ValueError for an unknown step."""
    global _armed, _count
    spec = os.environ.get(ENV, "").strip()
    _count = 0
    if not spec:
        _armed = None
        return
    step, _, n = spec.partition(":")
    if step not in STEPS or (n and not n.isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected STEP or STEP:N with STEP one of "
                         f"{', '.join(STEPS)}")
    _armed = (step, int(n or 1))


def reach(step: str) -> None:
    """Kill the process here when SAM_INSPECT_FAULT names this step (and count)."""
    if _armed is None or _armed[0] != step:
        return
    global _count
    with _lock:
        _count += 1
        if _count == _armed[1]:
            os.kill(os.getpid(), signal.SIGKILL)

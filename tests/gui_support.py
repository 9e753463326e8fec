"""Helpers for the GUI tests: small image folders, engines that count encoder runs or script
their masks, real mouse/key input on the canvas, answering the window's questions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFECT = (120, 80, 170, 110)  # x0, y0, x1, y1 (exclusive) of the dark defect in part images
SIZE = (240, 320)  # H, W


def part_image(seed: int = 0, defect=DEFECT, size=SIZE) -> np.ndarray:
    """Grey RGB part surface (about 180 +- 6) with one dark rectangular defect (about 60)."""
    rng = np.random.default_rng(seed)
    img = (180 + rng.normal(0, 6, size)).clip(0, 255)
    x0, y0, x1, y1 = defect
    img[y0:y1, x0:x1] = 60 + rng.normal(0, 4, (y1 - y0, x1 - x0))
    grey = img.astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def write_folder(folder: Path, n: int = 3, corrupt_at: int | None = None) -> list[Path]:
    """part_00.png ... (different seeds); `corrupt_at` makes that file garbage bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"part_{i:02d}.png"
        if i == corrupt_at:
            # PNG signature and end chunk (so not "truncated"), garbage between: corrupt
            path.write_bytes(b"\x89PNG\r\n\x1a\nnot an image" + b"\x00" * 64 + b"IEND\xaeB`\x82")
        else:
            cv2.imwrite(str(path), part_image(seed=i))
        paths.append(path)
    return paths


class CountingEngine:
    """Wraps an engine: records which images set_image got and the prompts predict got."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.set_image_digests = []  # one per set_image call
        self.predict_prompts = []

    def set_image(self, image):
        from sam_engine.image_io import image_digest

        self.set_image_digests.append(image_digest(image))
        return self.engine.set_image(image)

    def predict(self, handle, prompts, multimask_output=True):
        self.predict_prompts.append(prompts)
        return self.engine.predict(handle, prompts, multimask_output)


def tiny_sam_engine():
    """A random-weight tiny SAM with a memory-only cache, and a function giving the number of
    encoder runs so far (embedding cache misses: every miss runs the encoder once)."""
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.sam.backend import SamEngine
    from tests.sam_factory import tiny_sam

    engine = SamEngine(tiny_sam(0), "tiny", device="cpu", cache=EmbeddingCache())
    return engine, lambda: engine.cache.stats.misses


WAIT_MS = 30_000


def parts_image(defects, size=SIZE, seed: int = 0) -> np.ndarray:
    """Grey RGB part surface with one dark rectangle per (x0, y0, x1, y1) in `defects`."""
    rng = np.random.default_rng(seed)
    img = (180 + rng.normal(0, 6, size)).clip(0, 255)
    for x0, y0, x1, y1 in defects:
        img[y0:y1, x0:x1] = 60 + rng.normal(0, 4, (y1 - y0, x1 - x0))
    grey = img.astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


class ScriptedEngine:
    """The classic engine's embeddings, with every predict answered by `mask` (bool (H, W))
    scored `score` as a SAM engine's predicted IoU: a doubtful mask on demand."""

    def __init__(self, mask: np.ndarray, score: float) -> None:
        from dataclasses import replace

        from sam_engine.classic import ClassicEngine

        self.engine = ClassicEngine()
        self.info = replace(self.engine.info, name="sam", model_id="scripted")
        self.mask, self.score = mask, score

    def set_image(self, image):
        return self.engine.set_image(image)

    def predict(self, handle, prompts, multimask_output=True):
        from sam_engine.results import Masks

        masks = np.repeat(self.mask[None, None], 3, axis=1)
        scores = np.full((1, 3), self.score, np.float32)
        return Masks(masks, scores, np.zeros((1, 3, 256, 256), np.float32))


def wait_ready(qtbot, w):
    qtbot.waitUntil(lambda: w.annotator.prepared is not None
                    and w.annotator.prepared.image.path == w.current, timeout=WAIT_MS)


def wait_mask(qtbot, w):
    qtbot.waitUntil(lambda: w.annotator.active is not None
                    and w.annotator.session.candidate(w.annotator.active) is not None,
                    timeout=WAIT_MS)


def drag_box(qtbot, w, x0, y0, x1, y1):
    from PySide6.QtCore import QPoint, Qt

    vp = w.canvas.viewport()
    a, b = w.canvas.view_pos_of(x0, y0), w.canvas.view_pos_of(x1, y1)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(vp, a + QPoint(10, 10))
    qtbot.mouseMove(vp, b)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=b)


def click(qtbot, w, x, y, button=None, mods=None):
    from PySide6.QtCore import Qt

    pos = w.canvas.view_pos_of(x, y)
    qtbot.mouseClick(w.canvas.viewport(), button or Qt.MouseButton.LeftButton,
                     mods or Qt.KeyboardModifier.NoModifier, pos)


def answer_question(button_text: str, tries: int = 500) -> list[str]:
    """Click `button_text` in the next modal message box the window shows (from a timer, as
    the dialog's own event loop runs); returns a list that receives the question's text."""
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox

    seen: list[str] = []
    left = [tries]

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            seen.append(box.text())
            button = next(b for b in box.buttons() if b.text() == button_text)
            QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        elif left[0] > 0:
            left[0] -= 1
            QTimer.singleShot(10, poll)

    QTimer.singleShot(0, poll)
    return seen

"""SamEngine's CPU prompt decoder on onnxruntime, for the GUI's clicks.

onnx_graphs.ClickDecoderGraph is fast_decoder's math for one prompt, laid out for onnxruntime's
CPU kernels (static batch of one, written-out token softmax, final attention for the output
tokens only, a cheap pixel shuffle). onnxruntime runs it in ~2/3 of eager PyTorch's time
(benchmarks/results/onnx_decoder_cpu.json, vit_b on 2 cores: 23 ms against 35 ms per click),
which the GUI's click-to-mask budget needs. A prompt with a mask input runs the same graph on
the image terms corrected for that mask (FastMaskDecoder.mask_corrected on click_terms), one run
per box. The graph is exported in-process from the engine's own prompt encoder and mask decoder
(under a second) and kept in the embedding cache's folder (subfolder onnx-click) when it has
one, under a hash of those modules' weights. A failed export leaves every prompt to PyTorch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from sam_engine.prompts import Prompts
from sam_engine.sam.fast_decoder import FastMaskDecoder, ImageTerms

log = logging.getLogger(__name__)

CLICK_GRAPH_VERSION = "1"  # bump when the graph's inputs or math change
CLICK_INPUTS = ("src", "k1h", "v1h", "q1")  # the graph's per-image inputs


def available() -> bool:
    """onnxruntime and onnx (for the export) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def decoder_fingerprint(sam: Sam) -> str:
    """A hash of every prompt-encoder and mask-decoder weight (a few MB: hashed whole, so a
    decoder-only fine-tune never reuses another model's graph) and the graph's version."""
    h = hashlib.blake2b(digest_size=10)
    h.update(CLICK_GRAPH_VERSION.encode())
    for module in (sam.prompt_encoder, sam.mask_decoder):
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def click_terms(terms: ImageTerms) -> dict[str, torch.Tensor]:
    """The graph's per-image inputs from fast_decoder's ImageTerms (CPU float32, contiguous):
    src, q1 as they are (shared), the layer-1 keys/values split per head (heads, HW, d)."""
    nh = terms.q1.shape[0]

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], nh, -1).transpose(0, 1).contiguous()

    return {"src": terms.src.contiguous(), "k1h": split(terms.k1), "v1h": split(terms.v1),
            "q1": terms.q1.contiguous()}


def _export(sam: Sam) -> bytes:
    """ClickDecoderGraph traced to ONNX (fp32)."""
    from sam_engine.constants import LOW_RES_SIZE
    from sam_engine.onnx.graphs import ClickDecoderGraph
    from sam_engine.onnx.trace import DEFAULT_OPSET, FAST_OUTPUTS, trace

    h, w = sam.prompt_encoder.image_embedding_size
    emb = torch.zeros(1, sam.prompt_encoder.embed_dim, h, w)
    feeds = click_terms(FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder).image_terms(emb))
    coords, labels = torch.full((1, 2, 2), 100.0), torch.tensor([[1.0, -1.0]])
    model = trace(
        ClickDecoderGraph(sam), (*(feeds[k] for k in CLICK_INPUTS), coords, labels),
        (*CLICK_INPUTS, "point_coords", "point_labels"), FAST_OUTPUTS,
        {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}, DEFAULT_OPSET,
        ((1, 4, LOW_RES_SIZE, LOW_RES_SIZE), (1, 4)))
    return model.SerializeToString()


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _verified_bytes(path: Path) -> bytes | None:
    """The stored graph's bytes when they match the sha256 stored beside them, else None
    (after a warning saying the file is rebuilt)."""
    try:
        model = path.read_bytes()
        expected = _sha_path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        log.warning("cached click decoder %s has no recorded sha256; rebuilding it", path)
        return None
    except OSError as exc:
        log.warning("cannot read the cached click decoder %s (%s); rebuilding it", path, exc)
        return None
    got = hashlib.sha256(model).hexdigest()
    if got != expected:
        log.warning("cached click decoder %s is corrupt (sha256 %s, recorded %s); rebuilding it",
                    path, got, expected[:64])
        return None
    return model


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # readable by the other users of a shared cache, like the rest
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OnnxClickDecoder:
    """decoder_click for one SAM model on onnxruntime's CPU provider."""

    def __init__(self, model: bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        from sam_engine.onnx.runtime import session_options

        self.session = ort.InferenceSession(model, session_options(threads),
                                            providers=["CPUExecutionProvider"])

    @classmethod
    def build(cls, sam: Sam, folder: Path | None, threads: int | None = None) -> OnnxClickDecoder:
        """Load the graph from `folder` (None: export every time) or export and store it.

        The stored graph's sha256 is kept beside it (NAME.onnx.sha256) and checked at each load:
        a corrupt or unrecorded file is exported again and replaced, with a log line."""
        path = None if folder is None else folder / f"decoder_click-{decoder_fingerprint(sam)}.onnx"
        if path is not None and path.is_file():
            model = _verified_bytes(path)
            if model is not None:
                try:
                    return cls(model, threads)
                except Exception as exc:  # a foreign file with a matching hash: export again
                    log.warning("could not load %s (%s); exporting it again", path, exc)
        model = _export(sam)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, model)  # another process never reads half a file
                _write_atomic(_sha_path(path), (hashlib.sha256(model).hexdigest() + "\n").encode())
            except OSError as exc:
                log.warning("could not store the click decoder in %s: %s", path.parent, exc)
        return cls(model, threads)

    def __call__(
        self, terms: dict[str, torch.Tensor], prompts: Prompts, original_size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """click_terms and validated prompts without mask_input: low-res logits
        (B, 4, 256, 256) and IoU (B, 4) of all four mask tokens (0: single-mask output, 1..3:
        multimask), one run per box."""
        from sam_engine.onnx.runtime import run_fast_decoder

        feeds = {k: t.numpy() for k, t in terms.items()}  # shares the tensors' memory
        return run_fast_decoder(self.session, feeds, prompts, original_size)

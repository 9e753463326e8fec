"""SAM on onnxruntime only: the line controller's engine (numpy, onnxruntime and OpenCV; no torch).

OnnxEngine implements the Engine contract on a folder written by `sam-inspect export-onnx`:
set_image resizes in numpy (sam_engine.preprocess), runs encoder.onnx and image_terms.onnx once;
predict validates prompts (sam_engine.prompts), runs decoder_click.onnx once per box (on a GPU:
decoder_fast_nomask.onnx for all boxes at once; decoder_fast.onnx when a mask_input refines a
previous mask) and returns Masks whose full-size masks are upsampled lazily, on the mask's
window only (upsample_np). Nothing on this module's import path may import torch (a test checks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sam_engine import preprocess
from sam_engine.constants import IMG_SIZE, LOW_RES_SIZE, PIXEL_MEAN, PIXEL_STD, PREPROCESS_VERSION
from sam_engine.embedding_cache import EmbeddingCache, cache_key
from sam_engine.errors import CheckpointError, ImageError, PromptError
from sam_engine.image_io import image_digest, to_rgb8
from sam_engine.onnx.manifest import REEXPORT_HINT, OnnxFile, OnnxManifest, check_file
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks
from sam_engine.upsample_np import NumpyMaskUpsampler

log = logging.getLogger(__name__)

EMBEDDING_SHAPE = (1, 256, IMG_SIZE // 16, IMG_SIZE // 16)
# roles export-onnx --quantize writes int8 copies of (image_terms and the rest stay float32)
QUANTIZABLE_ROLES = ("decoder_fast", "decoder_fast_nomask", "decoder_click", "encoder")
_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


# ------------------------------------------------------------------ prompts -> graph inputs
def prompt_arrays(
    prompts: Prompts, original_size: tuple[int, int], batch: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Meta-style point_coords (B, N, 2) float32 in the resized frame and point_labels (B, N):
    the points (labels 1/0), then each box's corners (labels 2, 3), or one padding point (-1)
    when there is no box, exactly as SamPredictor's prompt encoder sees them."""
    p = prompts
    b = batch or max(p.n_boxes, 1)
    parts_c, parts_l = [], []
    if p.points is not None:
        c = preprocess.apply_coords(p.points, original_size)
        parts_c.append(np.broadcast_to(c, (b, *c.shape)))
        parts_l.append(np.broadcast_to(np.asarray(p.labels, np.float32), (b, len(c))))
    if p.boxes is not None:
        bx = preprocess.apply_boxes(p.boxes, original_size).reshape(-1, 2, 2)
        parts_c.append(bx)
        parts_l.append(np.broadcast_to(np.array([2, 3], np.float32), (b, 2)))
    else:
        parts_c.append(np.zeros((b, 1, 2), np.float32))
        parts_l.append(np.full((b, 1), -1, np.float32))
    coords = np.concatenate(parts_c, axis=1).astype(np.float32)
    labels = np.concatenate(parts_l, axis=1).astype(np.float32)
    return coords, labels


def run_fast_decoder(
    session: ort.InferenceSession,
    image_feeds: dict[str, np.ndarray],
    prompts: Prompts,
    original_size: tuple[int, int],
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated prompts through one of our decoder graphs (batched, fused or one-prompt click).
    Returns low-res logits (B, 4, 256, 256) and IoU (B, 4): token 0 is the single-mask output,
    1..3 the multimask ones. image_feeds: the image's terms (the ones the graph takes are used).
    chunk: prompts per run (None = all boxes in one run; graphs with a fixed batch of 1 run one
    prompt at a time)."""
    coords, labels = prompt_arrays(prompts, original_size)
    b = coords.shape[0]
    inputs = {i.name: i for i in session.get_inputs()}
    image_feeds = {k: v for k, v in image_feeds.items() if k in inputs}
    takes_mask = "mask_input" in inputs
    if inputs["point_coords"].shape[0] == 1:  # a static batch of one
        chunk = 1
    if prompts.mask_input is not None and not takes_mask:
        raise PromptError("this decoder graph has no mask_input; use decoder_fast.onnx")
    if prompts.mask_input is not None:
        mask = np.broadcast_to(prompts.mask_input[None].astype(np.float32),
                               (b, 1, LOW_RES_SIZE, LOW_RES_SIZE))
        has = np.ones(b, np.float32)
    else:
        mask = np.zeros((b, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        has = np.zeros(b, np.float32)
    step = chunk or b
    lows, ious = [], []
    for i in range(0, b, step):
        s = slice(i, i + step)
        feeds = {**image_feeds, "point_coords": np.ascontiguousarray(coords[s]),
                 "point_labels": np.ascontiguousarray(labels[s])}
        if takes_mask:
            feeds.update(mask_input=np.ascontiguousarray(mask[s]), has_mask_input=has[s])
        low, iou = session.run(None, feeds)
        lows.append(low)
        ious.append(iou)
    return np.concatenate(lows), np.concatenate(ious)


# ------------------------------------------------------------------ sessions
def choose_providers(prefer_tensorrt: bool = False) -> list[str]:
    """The execution providers of this onnxruntime build to use, best first, CPU always last:
    CUDA when present (onnxruntime-gpu), and before it TensorRT when present and asked for
    (its first run per input shape builds an engine, which takes minutes for the encoder, so it
    is opt-in; the engines are cached, see provider_config)."""
    avail = set(ort.get_available_providers())
    want = (("TensorrtExecutionProvider",) if prefer_tensorrt else ()) + _PREFERRED
    return [p for p in want if p in avail]


def provider_config(providers: list[str], folder: Path) -> list:
    """providers as InferenceSession takes them, with TensorRT's engine cache (and fp16) set
    to `folder`/trt_cache so only the first start pays for building its engines."""
    out: list = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            out.append((p, {"trt_engine_cache_enable": True, "trt_fp16_enable": True,
                            "trt_engine_cache_path": str(folder / "trt_cache")}))
        else:
            out.append(p)
    return out


def session_options(threads: int | None = None, spin: bool = False) -> ort.SessionOptions:
    """Options for every session of the runtime (and the benchmark): graph optimisations at
    their default (all), sequential execution, `threads` intra-op threads (None: one per core)
    and, unless spin, no busy-waiting between operators: the decoder runs ~150 small operators
    per call, and spinning threads only steal the CPU from other work on a shared machine
    (measured: no slower alone, much faster under load)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def open_session(
    folder: Path, f: OnnxFile, providers: list, threads: int | None,
    manifest: OnnxManifest | None = None, allow_unverified: bool = False,
) -> ort.InferenceSession:
    """An InferenceSession for one manifest entry, with errors that name the file and the fix.
    With `manifest`, the file's sha256 and export verification are checked first (check_file;
    the hashing is cached per file version)."""
    path = folder / f.path
    hint = REEXPORT_HINT
    if not path.is_file():
        raise CheckpointError(f"model file {path} is missing ({f.role}); {hint}")
    missing = [e for e in f.external_data if not (folder / e).is_file()]
    if missing:
        raise CheckpointError(f"external data {missing} of {path} is missing; {hint}")
    size = path.stat().st_size + sum((folder / e).stat().st_size for e in f.external_data)
    if size != f.size_bytes:
        raise CheckpointError(
            f"{path} has {size:,} bytes but the manifest says {f.size_bytes:,}: the file is "
            f"truncated or was replaced; {hint}"
        )
    if manifest is not None:
        check_file(folder, manifest, f, allow_unverified)
    try:
        s = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail)
        raise CheckpointError(f"{path} is not a loadable ONNX model ({exc}); {hint}") from exc
    names = tuple(i.name for i in s.get_inputs())
    expected = tuple(t.name for t in f.inputs)
    if names != expected:
        raise CheckpointError(f"{path} has inputs {names}, expected {expected} for {f.role}; "
                              f"{hint}")
    return s


@dataclass
class OnnxFeatures:
    """What an OnnxEngine ImageHandle carries."""

    embedding: np.ndarray  # (1, 256, 64, 64) float32
    terms: dict[str, np.ndarray]  # image_terms.onnx outputs, the fast decoder's inputs
    upsampler: NumpyMaskUpsampler


class OnnxEngine:
    """The Engine contract on exported ONNX graphs (see module doc)."""

    def __init__(
        self,
        models_dir: str | Path,
        *,
        quantized: bool = False,
        providers: list[str] | None = None,
        threads: int | None = None,
        cache: EmbeddingCache | None = None,
        chunk: int | None = None,
        prefer_tensorrt: bool = False,
        allow_unverified: bool = False,
    ) -> None:
        """quantized: use the int8 decoders/encoder; a role without an int8 copy loads its fp32
        file with a warning, and info.dtype / precisions say what was loaded (no int8 copy at
        all: CheckpointError). providers: onnxruntime execution providers (default
        choose_providers: CUDA when present, TensorRT too with prefer_tensorrt, else CPU).
        threads: intra-op threads per session (None: onnxruntime's default, one per core).
        chunk: boxes per run of the batched decoder (None: all in one run).

        Every file's sha256 is checked against the manifest (hashed once per file version);
        a file whose export verification failed is refused unless allow_unverified."""
        self.folder = Path(models_dir)
        if not self.folder.is_dir():
            raise CheckpointError(f"model folder {self.folder} does not exist; export it with "
                                  "`sam-inspect export-onnx --model NAME --out DIR`")
        self.manifest = OnnxManifest.load(self.folder)
        self._check_constants()
        self.providers = providers or choose_providers(prefer_tensorrt)
        configured = provider_config(self.providers, self.folder)
        self.chunk = chunk
        self.cache = cache if cache is not None else EmbeddingCache()
        if quantized and not any(f.quantized for f in self.manifest.files):
            raise CheckpointError(
                f"{self.folder} has no int8 models: re-export with `sam-inspect export-onnx "
                "--quantize`, or load it without quantized (int8)")
        # role -> "int8" / "float32": what each loaded session really is
        self.precisions: dict[str, str] = {}
        self.files: dict[str, OnnxFile] = {}
        unverified: list[str] = []

        def pick(role: str, required: bool = True) -> ort.InferenceSession | None:
            f = (self.manifest.find(role, True) if quantized else None) \
                or self.manifest.find(role, False)
            if f is None:
                if required:
                    raise CheckpointError(f"{self.folder} has no {role} model in its manifest; "
                                          "re-export with the needed options (--encoder)")
                return None
            session = open_session(self.folder, f, configured, threads, self.manifest,
                                   allow_unverified)
            if self.manifest.failed_verification(f.path):
                unverified.append(f.path)
            self.precisions[role] = "int8" if f.quantized else "float32"
            self.files[role] = f
            return session

        self.terms_session = pick("image_terms")
        self.decoder_session = pick("decoder_fast")
        # the same decoder without the mask-input path: used for prompts without mask_input
        self.nomask_session = pick("decoder_fast_nomask", required=False)
        # one prompt per run, tuned for onnxruntime: the fastest for prompts without mask_input
        self.click_session = pick("decoder_click", required=False)
        self.encoder_session = pick("encoder", required=False)
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        dev = "cuda" if gpu & set(self.decoder_session.get_providers()) else "cpu"
        used = {r: p for r, p in self.precisions.items() if r in QUANTIZABLE_ROLES}
        kinds = set(used.values())
        dtype = kinds.pop() if len(kinds) == 1 else "mixed"
        notes = [f"onnxruntime {ort.__version__}, providers {', '.join(self.providers)}"]
        fp32 = sorted(r for r, p in used.items() if p == "float32")
        if quantized and fp32:
            log.warning("%s has no int8 copy of %s: loaded as float32 (re-export with "
                        "--quantize for int8)", self.folder, ", ".join(fp32))
            notes.append("int8 " + ", ".join(sorted(set(used) - set(fp32)))
                         + "; float32 " + ", ".join(fp32))
        if unverified:
            notes.append(f"unverified: {', '.join(unverified)} failed the export check")
            log.warning("%s: loading %s although the export's verification failed",
                        self.folder, ", ".join(unverified))
        self.info = EngineInfo(
            name="sam-onnx", model_id=self.manifest.model_id, device=dev, dtype=dtype,
            checkpoint=str(self.folder), checkpoint_sha256=self.manifest.checkpoint_sha256,
            note="; ".join(notes),
        )

    def _check_constants(self) -> None:
        pp = self.manifest.preprocessing
        ours = (tuple(PIXEL_MEAN), tuple(PIXEL_STD), IMG_SIZE, LOW_RES_SIZE, PREPROCESS_VERSION)
        theirs = (tuple(pp.pixel_mean), tuple(pp.pixel_std), pp.img_size, pp.low_res_size,
                  pp.version)
        if ours != theirs:
            raise CheckpointError(
                f"{self.folder} was exported with preprocessing {theirs}, this runtime uses "
                f"{ours}; re-export with this version of sam-inspect"
            )

    # ------------------------------------------------------------------ image
    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """Image embedding (1, 256, 64, 64) float32 of an RGB uint8 image."""
        if self.encoder_session is None:
            raise CheckpointError(f"{self.folder} has no encoder.onnx: export with --encoder, "
                                  "or pass embeddings to handle_from_embedding")
        resized = preprocess.resize_longest(rgb)
        return self.encoder_session.run(None, {
            "image": preprocess.pad_to_square(resized),
            "input_size": np.array(resized.shape[:2], np.int64)})[0]

    def set_image(self, image: np.ndarray) -> ImageHandle:
        rgb = to_rgb8(image)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        key = cache_key(image_digest(rgb), self.manifest.model_id, self._key_extra())
        cached = self.cache.get(key)
        if cached is not None and "embedding" in cached:
            return self._handle(key, original_size, cached["embedding"], True)
        emb = self.encode(rgb)
        self.cache.put(key, {"embedding": emb})
        return self._handle(key, original_size, emb, False)

    def _key_extra(self) -> str:
        """The embedding's provenance for the cache key: the checkpoint, and the encoder file
        (its verified sha256) with the precision it really runs at."""
        enc = self.files.get("encoder")
        ckpt = (self.manifest.checkpoint_sha256 or "onnx")[:16]
        if enc is None:
            return ckpt
        return f"{ckpt}.{self.precisions['encoder']}-{enc.sha256[:16]}"

    def handle_from_embedding(
        self, embedding: np.ndarray, original_size: tuple[int, int], key: str = ""
    ) -> ImageHandle:
        """An ImageHandle for an embedding computed elsewhere."""
        return self._handle(key, tuple(int(v) for v in original_size), embedding, True)

    def _handle(self, key, original_size, embedding, from_cache) -> ImageHandle:
        emb = np.ascontiguousarray(embedding, dtype=np.float32)
        if emb.shape != EMBEDDING_SHAPE:
            raise ImageError(f"image embedding must have shape {EMBEDDING_SHAPE}, got "
                             f"{emb.shape}")
        if len(original_size) != 2 or min(original_size) < 1:
            raise ImageError(f"original image size must be (H, W) >= 1, got {original_size}")
        terms = self.terms_session.run(None, {"image_embeddings": emb})
        input_size = preprocess.preprocess_shape(*original_size)
        names = [o.name for o in self.terms_session.get_outputs()]
        feats = OnnxFeatures(emb, dict(zip(names, terms, strict=True)),
                             NumpyMaskUpsampler(input_size, original_size))
        return ImageHandle(key, original_size, input_size, feats, from_cache)

    # ------------------------------------------------------------------ prompts
    def predict(
        self, handle: ImageHandle, prompts: Prompts, multimask_output: bool = True
    ) -> Masks:
        feats = handle.features
        if not isinstance(feats, OnnxFeatures):
            raise PromptError("this image handle was made by another engine; call set_image on "
                              "the OnnxEngine first")
        p = validate_prompts(prompts, handle.original_size)
        session = self.decoder_session
        if p.mask_input is None:  # the graphs without the mask-input path are faster
            batched = self.nomask_session or session
            # on a CPU one prompt per run of the click graph beats any batch (five boxes:
            # ~15 % less time than one batched run); a GPU prefers one launch for all
            one_by_one = max(p.n_boxes, 1) == 1 or self.info.device == "cpu"
            session = self.click_session if one_by_one and self.click_session else batched
        low, iou = run_fast_decoder(session, feats.terms, p, handle.original_size, self.chunk)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        low, iou = np.ascontiguousarray(low[:, sl]), np.ascontiguousarray(iou[:, sl])
        return Masks(
            scores=iou, low_res_logits=low, image_size=handle.original_size,
            upsample=lambda b, c: feats.upsampler(low[b, c][None])[0],
        )

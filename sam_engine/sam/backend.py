"""The SAM engine: Meta's segment-anything model behind the Engine contract.

set_image runs the heavy image encoder once per image (or fetches the embedding from the cache);
predict runs only the prompt decoder (see fast_decoder) and upsamples only the mask's window.
The encoder is the fast twin of Meta's (encoder_fast: SDPA attention, bf16/fp16 on a GPU,
optional torch.compile) unless fast=False; prepare (worker threads) + set_images (batched
forwards) let batch mode keep the encoder busy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from segment_anything.modeling import Sam

from sam_engine import preprocess
from sam_engine.constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD
from sam_engine.embedding_cache import EmbeddingCache, cache_key
from sam_engine.encoders.input import cpu_input, encoder_batch, mean_std, pinned
from sam_engine.image_io import image_digest, to_rgb8
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks, PreparedImage
from sam_engine.sam.click_decoder import OnnxClickDecoder, available, click_terms
from sam_engine.sam.device import DeviceChoice, choose_device
from sam_engine.sam.fast_decoder import FastMaskDecoder, ImageTerms
from sam_engine.sam.mask_upsample import MaskUpsampler

log = logging.getLogger(__name__)

# Images per encoder forward in set_images, per device type. On a CPU one image already fills
# the cores and a batch only grows the working set.
DEFAULT_BATCH = {"cuda": 8, "mps": 4, "cpu": 1}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass
class SamFeatures:
    """What a SAM ImageHandle carries: the embedding and the decoder's per-image terms."""

    embedding: torch.Tensor  # (1, 256, 64, 64) float32
    terms: ImageTerms
    upsampler: MaskUpsampler
    click_terms: dict[str, torch.Tensor] | None = None  # the onnxruntime decoder's inputs


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class SamEngine:
    """Segment Anything with a cached embedding per image and a fast decoder per prompt.

    fast: run the encoder's fast twin (default) instead of Meta's modules. compile: also
    torch.compile its blocks (default: $SAM_INSPECT_COMPILE); the Inductor cache lives beside
    the embedding cache. warmup: one forward at load so the first image is not slow (default:
    on GPUs). cuda_graphs: replay CUDA graphs of the fast encoder for batch 1 and batch_size
    (default: on CUDA unless compiled; needs the warm-up). batch_size: images per forward in
    set_images (default: DEFAULT_BATCH). click_onnx: decode prompts on onnxruntime's CPU
    provider, one run per box (onnx_click; default: on a CPU when onnxruntime is installed);
    it is exported (or loaded from the disk cache's folder) when first needed: at the first
    image, or at load by calling click_decoder().
    """

    def __init__(
        self,
        sam: Sam,
        model_id: str,
        *,
        device: DeviceChoice | str | None = None,
        cache: EmbeddingCache | None = None,
        checkpoint: str | None = None,
        checkpoint_sha256: str | None = None,
        fast: bool = True,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
        warmup: bool | None = None,
        batch_size: int | None = None,
        decoder: str = "auto",
        click_onnx: bool | None = None,
    ) -> None:
        if decoder not in ("auto", "fast", "meta"):
            raise ValueError(f"decoder must be auto, fast or meta, not {decoder!r}")
        self.choice = device if isinstance(device, DeviceChoice) else choose_device(device)
        self.device = torch.device(self.choice.device)
        self.model_id = model_id
        self.model = self._load_model(sam)
        self.weights_id = _weights_id(self.model, checkpoint_sha256)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.meta_decoder = decoder == "meta"
        self.decoder = self._build_decoder()
        self.click_onnx = self._wants_click_onnx(click_onnx)
        self._click: OnnxClickDecoder | None = None
        self._click_lock = threading.Lock()
        self.fast = fast
        self.compiled = bool(_env_flag("SAM_INSPECT_COMPILE") if compile is None else compile)
        self.batch_size = max(1, batch_size or DEFAULT_BATCH.get(self.device.type, 1))
        self.encoder = self._build_encoder()
        self.cuda_graphs = bool(
            self.fast and self.device.type == "cuda" and not self.compiled
            and (cuda_graphs if cuda_graphs is not None else True))
        self._setup_input()
        self.info = self._describe(checkpoint, checkpoint_sha256)
        if self.cuda_graphs or (warmup if warmup is not None else self.device.type != "cpu"):
            self.warmup()

    # ------------------------------------------------------------------ construction
    def _load_model(self, sam: Sam) -> Sam:
        """Meta's model in eval mode, its preprocessing checked, the prompt modules on the
        device (the image encoder moves in _build_encoder)."""
        model = sam.eval()
        _check_preprocessing(model)
        model.prompt_encoder.to(self.device)
        model.mask_decoder.to(self.device)
        return model

    def _build_decoder(self) -> FastMaskDecoder:
        """The fast decoder (image terms cached per image). The reassociated decoder halves the
        FLOPs, which pays on a CPU. On an H100 both are launch-bound and measured alike
        (benchmarks/results/engine_vit_h_cuda*.json), so "auto" keeps the fast one; "meta"
        (meta_decoder) runs Meta's module unchanged in predict, for comparison."""
        return FastMaskDecoder(self.model.prompt_encoder, self.model.mask_decoder,
                               chunk=1 if self.device.type == "cpu" else None)

    def _wants_click_onnx(self, click_onnx: bool | None) -> bool:
        if click_onnx is None:
            return self.device.type == "cpu" and not self.meta_decoder and available()
        if click_onnx and self.device.type != "cpu":
            raise ValueError("click_onnx runs on onnxruntime's CPU provider: use it on a CPU")
        return bool(click_onnx)

    def _setup_input(self) -> None:
        """How images reach the encoder: on CUDA uint8 uploads from pinned memory on a copy
        stream, resized on the device (encoders.input); elsewhere resized, normalised, padded
        pixels from prepare. Both give their own cache keys and PreparedImage tags."""
        self.resize_on_device = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if self.resize_on_device else None
        self._mean, self._std = mean_std(self.device)
        variant = [] if self.choice.dtype == "float32" else [_SHORT[self.choice.dtype]]
        variant += ["gpu-resize"] if self.resize_on_device else []
        self._key_extra = ".".join([self.weights_id, *variant])
        self._prepared_by = "sam:pinned-uint8" if self.resize_on_device else "sam:cpu-pixels"

    def _describe(self, checkpoint: str | None, checkpoint_sha256: str | None) -> EngineInfo:
        parts = ["fast encoder" if self.fast else "Meta's encoder modules"]
        parts += ["Meta's decoder" if self.meta_decoder else "fast decoder"]
        parts += ["onnxruntime click decoder"] if self.click_onnx else []
        parts += ["torch.compile"] if self.compiled else []
        parts += ["CUDA graphs"] if self.cuda_graphs else []
        return EngineInfo(
            name="sam",
            model_id=self.model_id,
            device=self.choice.device,
            dtype=self.choice.dtype,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            note=f"{self.choice.reason}; {', '.join(parts)}",
        )

    # ------------------------------------------------------------------ encoder
    def _build_encoder(self) -> torch.nn.Module:
        official = self.model.image_encoder
        if not self.fast:
            if self.compiled:
                raise ValueError("compile=True needs the fast encoder (fast=True)")
            return official.to(self.device)
        from sam_engine.encoders.fast import compile_encoder, fast_encoder

        twin = fast_encoder(official, dtype=self.choice.torch_dtype, device=self.device)
        if self.compiled:
            from sam_engine.embedding_cache import default_cache_dir

            compile_encoder(twin, default_cache_dir().parent / "torch-compile")
        return twin

    @torch.no_grad()
    def warmup(self) -> None:
        """One forward on random pixels (and on a full batch when compiled): kernels, cuBLAS /
        cuDNN handles and compiled graphs are ready before the first image."""
        g = torch.Generator(device=self.device).manual_seed(0)
        sizes = sorted({1, self.batch_size if self.compiled or self.cuda_graphs else 1})
        if self.fast:
            from sam_engine.encoders.fast import autotune

            with autotune():  # times the attention methods per shape once (CUDA only)
                for n in sizes:
                    x = torch.randn(n, 3, IMG_SIZE, IMG_SIZE, generator=g, device=self.device)
                    self._run_encoder(x)
        else:
            self._run_encoder(torch.randn(1, 3, IMG_SIZE, IMG_SIZE, generator=g,
                                          device=self.device))
        if self.cuda_graphs:
            from sam_engine.encoders.fast import GraphedEncoder

            graphed = GraphedEncoder(self.encoder)
            try:
                for n in sorted(sizes, reverse=True):
                    graphed.capture(n, IMG_SIZE)
                self.encoder = graphed
            except RuntimeError as exc:  # a kernel that cannot be captured: stay eager
                log.warning("CUDA graph capture failed, running eagerly: %s", exc)
                self.cuda_graphs = False
                self.info = replace(self.info, note=self.info.note.replace(", CUDA graphs", ""))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1024, 1024) normalised pixels on the device -> (B, 256, 64, 64) float32."""
        if not self.fast and self.choice.dtype != "float32" and self.device.type != "cpu":
            with torch.autocast(self.device.type, dtype=self.choice.torch_dtype):
                return self.encoder(x).float()
        return self.encoder(x).float()

    # ------------------------------------------------------------------ image
    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the resized image inside the encoder's square input."""
        return preprocess.preprocess_shape(int(original_size[0]), int(original_size[1]))

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """CPU-side work for one image, safe on worker threads (no model call): conversion,
        content digest, and the encoder input (CPU: resized, normalised, padded pixels, the
        same as SamPredictor's; CUDA: the uint8 image in pinned memory, resized on the GPU)."""
        rgb = to_rgb8(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        if self.resize_on_device:
            payload = pinned(np.ascontiguousarray(rgb))
        else:
            payload = cpu_input(rgb)
        return PreparedImage(rgb, image_digest(rgb), size, self.input_size(size),
                             self._prepared_by, payload)

    def _own(self, item: np.ndarray | PreparedImage) -> PreparedImage:
        if isinstance(item, PreparedImage):
            return item if item.prepared_by == self._prepared_by else self.prepare(item.rgb)
        return self.prepare(item)

    def _key(self, p: PreparedImage) -> str:
        return cache_key(p.digest, self.model_id, self._key_extra)

    @torch.no_grad()
    def _encode_prepared(self, batch: Sequence[PreparedImage]) -> torch.Tensor:
        """Enqueue one forward for prepared images: (B, 256, 64, 64) float32 on the device.
        Nothing here waits for the device."""
        if self.resize_on_device:
            stream = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(self._copy_stream):
                up = [p.payload.to(self.device, non_blocking=True) for p in batch]
            stream.wait_stream(self._copy_stream)
            for t in up:
                t.record_stream(stream)
            x = encoder_batch(up, [p.input_size for p in batch], self._mean, self._std)
        else:
            x = torch.stack([p.payload for p in batch]).to(self.device)
        return self._run_encoder(x)

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """Image embedding (1, 256, 64, 64) float32 of an RGB uint8 image (no cache)."""
        return self._encode_prepared([self.prepare(rgb)])

    def set_image(self, image: np.ndarray) -> ImageHandle:
        return self.set_prepared(self.prepare(image))

    def set_prepared(self, prepared: PreparedImage) -> ImageHandle:
        """The handle of a prepared image: cache lookup, else the encoder."""
        return self.set_images([prepared])[0]

    def set_images(self, images: Sequence[np.ndarray | PreparedImage]) -> list[ImageHandle]:
        """Handles for several images, encoding the uncached ones `batch_size` per forward.

        On a GPU the next batch is enqueued before the previous one's embeddings are copied to
        the host for the cache, so uploads, compute and downloads overlap.
        """
        prepared = [self._own(im) for im in images]
        handles: list[ImageHandle | None] = [None] * len(prepared)
        todo: dict[str, list[int]] = {}
        for i, p in enumerate(prepared):
            key = self._key(p)
            if key in todo:
                todo[key].append(i)
                continue
            cached = self.cache.get(key)
            if cached is not None and "embedding" in cached:
                emb = torch.from_numpy(cached["embedding"]).to(self.device)
                handles[i] = self._handle(key, p.original_size, emb, True)
            else:
                todo[key] = [i]
        keys = list(todo)
        pending = None
        for s in range(0, len(keys), self.batch_size):
            chunk = keys[s:s + self.batch_size]
            emb = self._encode_prepared([prepared[todo[k][0]] for k in chunk])
            host = self._to_host(emb)
            if pending is not None:
                self._finish(*pending, prepared, todo, handles)
            pending = (chunk, emb, host)
        if pending is not None:
            self._finish(*pending, prepared, todo, handles)
        return handles  # type: ignore[return-value]

    def _to_host(self, emb: torch.Tensor):
        if emb.device.type != "cuda":
            return emb.cpu(), None
        host = torch.empty(emb.shape, dtype=emb.dtype, pin_memory=True)
        host.copy_(emb, non_blocking=True)
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(emb.device))
        return host, done

    def _finish(self, chunk, emb, host, prepared, todo, handles) -> None:
        arr, done = host
        if done is not None:
            done.synchronize()
        for j, key in enumerate(chunk):
            self.cache.put(key, {"embedding": arr[j:j + 1].numpy()})
            for i in todo[key]:
                handles[i] = self._handle(key, prepared[i].original_size, emb[j:j + 1], False)

    def handle_from_embedding(
        self, embedding: np.ndarray | torch.Tensor, original_size: tuple[int, int], key: str = ""
    ) -> ImageHandle:
        """An ImageHandle for an embedding computed elsewhere (batch workers, ONNX encoder)."""
        emb = torch.as_tensor(embedding, device=self.device).float()
        return self._handle(key, tuple(original_size), emb, from_cache=True)

    def _handle(self, key, original_size, embedding, from_cache) -> ImageHandle:
        input_size = self.input_size(original_size)
        terms = self.decoder.image_terms(embedding)
        feats = SamFeatures(
            embedding=embedding,
            terms=terms,
            upsampler=MaskUpsampler(input_size, original_size),
            click_terms=click_terms(terms) if self.click_decoder() is not None else None,
        )
        return ImageHandle(key, original_size, input_size, feats, from_cache)

    def click_decoder(self) -> OnnxClickDecoder | None:
        """The onnxruntime click decoder, built at the first call (the first image, or an
        explicit call at load: the export takes about a second and holds the GIL for up to
        ~50 ms at a time); exported, or loaded from the disk cache's folder. None when off or
        when that failed (then PyTorch decodes everything)."""
        if not self.click_onnx:
            return None
        with self._click_lock:
            if self._click is None and self.click_onnx:
                disk = self.cache.disk_dir  # its pruning only touches embedding files
                try:
                    self._click = OnnxClickDecoder.build(
                        self.model, None if disk is None else disk / "onnx-click",
                        torch.get_num_threads())
                except Exception as exc:  # an exporter or runtime problem: PyTorch decodes
                    log.warning("onnxruntime click decoder unavailable, PyTorch decodes all "
                                "prompts: %s", exc)
                    self.click_onnx = False
                    self.info = replace(self.info, note=self.info.note.replace(
                        ", onnxruntime click decoder", ""))
            return self._click

    # ------------------------------------------------------------------ prompts
    def prompt_tensors(self, handle: ImageHandle, prompts: Prompts):
        """Validated prompts in the 1024-frame as tensors (points (B,N,2), labels, boxes, mask)."""
        p = validate_prompts(prompts, handle.original_size)
        b = max(p.n_boxes, 1)
        points = labels = boxes = mask = None
        if p.points is not None:
            coords = preprocess.apply_coords(p.points, handle.original_size)
            points = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            points = points.unsqueeze(0).expand(b, -1, -1)
            labels = torch.as_tensor(p.labels, dtype=torch.int, device=self.device)
            labels = labels.unsqueeze(0).expand(b, -1)
        if p.boxes is not None:
            bx = preprocess.apply_boxes(p.boxes, handle.original_size)
            boxes = torch.as_tensor(bx, dtype=torch.float, device=self.device)
        if p.mask_input is not None:
            mask = torch.as_tensor(p.mask_input, device=self.device).unsqueeze(0)
            mask = mask.expand(b, -1, -1, -1)
        return points, labels, boxes, mask

    @torch.no_grad()
    def predict(
        self, handle: ImageHandle, prompts: Prompts, multimask_output: bool = True
    ) -> Masks:
        feats: SamFeatures = handle.features
        if feats.click_terms is not None and self._click is not None:
            return self._predict_click(handle, prompts, multimask_output)
        points, labels, boxes, mask = self.prompt_tensors(handle, prompts)
        if self.meta_decoder:
            pe = self.model.prompt_encoder
            sparse, dense = pe(points=None if points is None else (points, labels),
                               boxes=boxes, masks=mask)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=feats.embedding, image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask_output)
        else:
            sparse, _ = self.model.prompt_encoder(
                points=None if points is None else (points, labels), boxes=boxes, masks=None
            )
            low_res, iou = self.decoder(feats.terms, sparse, mask, multimask_output)
        low_cpu = low_res.float().cpu()
        if self.device.type == "cpu":
            upsample = lambda b, c: feats.upsampler(low_cpu[b, c][None])[0]  # noqa: E731
        else:
            # On an accelerator the full-frame interpolation is a few microseconds, while the
            # CPU window search is not: upsample there and copy only the boolean mask back.
            def upsample(b: int, c: int) -> np.ndarray:
                return (feats.upsampler.logits(low_res[b, c][None]) > 0)[0].cpu().numpy()
        return Masks(
            scores=iou.float().cpu().numpy(),
            low_res_logits=low_cpu.numpy(),
            image_size=handle.original_size,
            upsample=upsample,
        )

    def _predict_click(
        self, handle: ImageHandle, prompts: Prompts, multimask_output: bool
    ) -> Masks:
        """predict on the onnxruntime click decoder (one run per box)."""
        feats: SamFeatures = handle.features
        p = validate_prompts(prompts, handle.original_size)
        terms = feats.click_terms
        if p.mask_input is not None:  # the same graph on the mask-corrected image terms
            mask = torch.as_tensor(p.mask_input, dtype=torch.float, device=self.device)[None]
            terms = {k: t[0] for k, t in self.decoder.mask_corrected(terms, mask).items()}
            p = replace(p, mask_input=None)
        low, iou = self._click(terms, p, handle.original_size)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        low, iou = np.ascontiguousarray(low[:, sl]), np.ascontiguousarray(iou[:, sl])
        return Masks(
            scores=iou, low_res_logits=low, image_size=handle.original_size,
            upsample=lambda b, c: feats.upsampler(torch.from_numpy(low[b, c][None]))[0],
        )


def _weights_id(sam: Sam, checkpoint_sha256: str | None) -> str:
    """The embeddings' weights identity for cache keys: the encoder's fingerprint, and the
    whole checkpoint file's hash when known (any change gives other cache keys)."""
    fingerprint = weights_fingerprint(sam)
    return f"{fingerprint}-{checkpoint_sha256[:16]}" if checkpoint_sha256 else fingerprint


def weights_fingerprint(sam: Sam) -> str:
    """A short hash of a sample of every encoder weight tensor (its first 256 values): two
    checkpoints of one architecture (official and fine-tuned vit_b) never share embeddings,
    and hashing stays cheap for vit_h."""
    h = hashlib.blake2b(digest_size=8)
    for t in sam.image_encoder.state_dict().values():
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _check_preprocessing(sam: Sam) -> None:
    """The model's own normalisation buffers must equal our constants (one source of truth)."""
    mean = sam.pixel_mean.flatten().tolist()
    std = sam.pixel_std.flatten().tolist()
    if not (np.allclose(mean, PIXEL_MEAN) and np.allclose(std, PIXEL_STD)):
        raise ValueError(
            f"model normalisation mean={mean} std={std} differs from sam_engine.constants "
            f"({PIXEL_MEAN}, {PIXEL_STD}); update the constants and PREPROCESS_VERSION"
        )
    if sam.image_encoder.img_size != IMG_SIZE:
        raise ValueError(f"model input size {sam.image_encoder.img_size} != {IMG_SIZE}")

"""The SAM engine: Meta's segment-anything model behind the Engine contract.

set_image runs the heavy image encoder once per image (or fetches the embedding from the cache);
predict runs only the prompt decoder (see fast_decoder) and upsamples only the mask's window.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD
from .device import DeviceChoice, choose_device
from .embedding_cache import EmbeddingCache, cache_key
from .fast_decoder import FastMaskDecoder, ImageTerms
from .image_io import image_digest, to_rgb8
from .mask_upsample import MaskUpsampler
from .prompts import Prompts, validate_prompts
from .results import EngineInfo, ImageHandle, Masks

log = logging.getLogger(__name__)


@dataclass
class SamFeatures:
    """What a SAM ImageHandle carries: the embedding and the decoder's per-image terms."""

    embedding: torch.Tensor  # (1, 256, 64, 64) float32
    terms: ImageTerms
    upsampler: MaskUpsampler


class SamEngine:
    """Segment Anything with a cached embedding per image and a fast decoder per prompt."""

    def __init__(
        self,
        sam: Sam,
        model_id: str,
        *,
        device: DeviceChoice | str | None = None,
        cache: EmbeddingCache | None = None,
        checkpoint: str | None = None,
        checkpoint_sha256: str | None = None,
    ) -> None:
        self.choice = device if isinstance(device, DeviceChoice) else choose_device(device)
        self.device = torch.device(self.choice.device)
        self.model = sam.eval().to(self.device)
        _check_preprocessing(self.model)
        self.model_id = model_id
        self.weights_id = weights_fingerprint(self.model)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.transform = ResizeLongestSide(IMG_SIZE)
        self.decoder = FastMaskDecoder(
            self.model.prompt_encoder,
            self.model.mask_decoder,
            chunk=1 if self.device.type == "cpu" else None,
        )
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(3, 1, 1)
        self.info = EngineInfo(
            name="sam",
            model_id=model_id,
            device=self.choice.device,
            dtype=self.choice.dtype,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            note=self.choice.reason,
        )

    # ------------------------------------------------------------------ image
    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return ResizeLongestSide.get_preprocess_shape(original_size[0], original_size[1], IMG_SIZE)

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised, padded (1, 3, 1024, 1024) float tensor.

        The resize is segment-anything's own (ResizeLongestSide.apply_image), so embeddings match
        SamPredictor's for the same pixels.
        """
        resized = self.transform.apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
        x = (x - self._mean) / self._std
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, IMG_SIZE - w, 0, IMG_SIZE - h))
        return x.unsqueeze(0)

    @torch.no_grad()
    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        """Image embedding (1, 256, 64, 64) float32 of an RGB uint8 image (no cache)."""
        x = self.preprocess(rgb)
        if self.choice.dtype != "float32" and self.device.type != "cpu":
            with torch.autocast(self.device.type, dtype=self.choice.torch_dtype):
                emb = self.model.image_encoder(x)
        else:
            emb = self.model.image_encoder(x)
        return emb.float()

    def set_image(self, image: np.ndarray) -> ImageHandle:
        rgb = to_rgb8(image)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        key = cache_key(image_digest(rgb), self.model_id, self.weights_id)
        cached = self.cache.get(key)
        if cached is not None and "embedding" in cached:
            embedding = torch.from_numpy(cached["embedding"]).to(self.device)
            from_cache = True
        else:
            embedding = self.encode(rgb)
            self.cache.put(key, {"embedding": embedding.cpu().numpy()})
            from_cache = False
        return self._handle(key, original_size, embedding, from_cache)

    def handle_from_embedding(
        self, embedding: np.ndarray | torch.Tensor, original_size: tuple[int, int], key: str = ""
    ) -> ImageHandle:
        """An ImageHandle for an embedding computed elsewhere (batch workers, ONNX encoder)."""
        emb = torch.as_tensor(embedding, device=self.device).float()
        return self._handle(key, tuple(original_size), emb, from_cache=True)

    def _handle(self, key, original_size, embedding, from_cache) -> ImageHandle:
        input_size = self.input_size(original_size)
        feats = SamFeatures(
            embedding=embedding,
            terms=self.decoder.image_terms(embedding),
            upsampler=MaskUpsampler(input_size, original_size),
        )
        return ImageHandle(key, original_size, input_size, feats, from_cache)

    # ------------------------------------------------------------------ prompts
    def prompt_tensors(self, handle: ImageHandle, prompts: Prompts):
        """Validated prompts in the 1024-frame as tensors (points (B,N,2), labels, boxes, mask)."""
        p = validate_prompts(prompts, handle.original_size)
        b = max(p.n_boxes, 1)
        points = labels = boxes = mask = None
        if p.points is not None:
            coords = self.transform.apply_coords(p.points, handle.original_size)
            points = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            points = points.unsqueeze(0).expand(b, -1, -1)
            labels = torch.as_tensor(p.labels, dtype=torch.int, device=self.device)
            labels = labels.unsqueeze(0).expand(b, -1)
        if p.boxes is not None:
            bx = self.transform.apply_boxes(p.boxes, handle.original_size)
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
        points, labels, boxes, mask = self.prompt_tensors(handle, prompts)
        sparse, _ = self.model.prompt_encoder(
            points=None if points is None else (points, labels), boxes=boxes, masks=None
        )
        low_res, iou = self.decoder(feats.terms, sparse, mask, multimask_output)
        low_cpu = low_res.float().cpu()
        return Masks(
            scores=iou.float().cpu().numpy(),
            low_res_logits=low_cpu.numpy(),
            image_size=handle.original_size,
            upsample=lambda b, c: feats.upsampler(low_cpu[b, c][None])[0],
        )


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

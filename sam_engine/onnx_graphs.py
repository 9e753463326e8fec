"""torch modules traced into ONNX by onnx_export (they need torch; the runtime never imports them).

Every decoder graph takes prompts the way Meta's ONNX decoder does: point_coords (B, N, 2) in the
resized 1024-frame, point_labels (B, N) with 1/0 = positive/negative point, 2/3 = box corners,
-1 = padding; mask_input (B, 1, 256, 256); has_mask_input (B,) or (1,). Ours return all four
mask tokens' low-res logits (B, 4, 256, 256) and IoU (B, 4) (token 0 = single-mask output,
1..3 = multimask), like Meta's low_res_masks; full-size upsampling is left to the runtime.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import nn

from .constants import PIXEL_MEAN, PIXEL_STD
from .fast_decoder import (
    FastMaskDecoder,
)

TERM_NAMES = ("src", "k1", "v1", "q1")  # per-image inputs of the split fast decoder


def meta_decoder(sam: Sam) -> nn.Module:
    """Meta's own export module: full-res logits of all 4 masks, IoU, low-res logits."""
    return SamOnnxModel(sam, return_single_mask=False)


class ImageTermsGraph(nn.Module):
    """image_embeddings (1, C, 64, 64) -> src, k1, v1 (HW, C|Ci), q1 (heads, HW, d)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam  # registered, so its weights are graph initialisers, not constants
        self.fd = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)

    def forward(self, image_embeddings: torch.Tensor):
        t = self.fd.image_terms(image_embeddings)
        return t.src, t.k1, t.v1, t.q1


class FastDecoderGraph(nn.Module):
    """fast_decoder's reassociated decoder for B prompts per call, mask input gated by
    has_mask_input. fused=True: first input is image_embeddings (terms computed inside);
    else the four ImageTermsGraph outputs. with_mask=False: no mask_input/has_mask_input inputs
    (the graph for prompts without a previous mask; it skips the mask path entirely)."""

    def __init__(self, sam: Sam, fused: bool, with_mask: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.with_mask = with_mask
        self.sam = sam
        self.meta = SamOnnxModel(sam, return_single_mask=False)  # for _embed_points
        self.fd = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
        self.terms = ImageTermsGraph(sam)

    def forward(self, *args: torch.Tensor):
        if self.fused:
            src, k1, v1, q1 = self.terms(args[0])
            rest = args[1:]
        else:
            src, k1, v1, q1 = args[:4]
            rest = args[4:]
        if not self.with_mask:
            rest = (*rest, None, None)
        point_coords, point_labels, mask_input, has_mask_input = rest
        return self._decode(src, k1, v1, q1, point_coords, point_labels, mask_input,
                            has_mask_input)

    def _decode(self, src, k1, v1, q1, point_coords, point_labels, mask_input, has_mask):
        fd, pe, md = self.fd, self.sam.prompt_encoder, self.sam.mask_decoder
        tf = md.transformer
        sparse = self.meta._embed_points(point_coords, point_labels)
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        pos = pe.get_dense_pe()[0].flatten(1).t().unsqueeze(0)  # a constant of the graph
        layer1 = tf.layers[0]
        if mask_input is None:
            return self._transformer(tokens, src.unsqueeze(0), pos, k1.unsqueeze(0),
                                     v1.unsqueeze(0), q1.unsqueeze(0))
        # fast_decoder's mask-input correction, scaled by has_mask (0 leaves the no-mask terms).
        g = has_mask.reshape(-1, 1, 1).to(src.dtype)
        h16 = pe.mask_downscaling[:-1](mask_input).flatten(2).transpose(1, 2)  # B, HW, 16
        src = src.unsqueeze(0) + g * (h16 @ fd._wc.t() + (fd._bc - fd._no_mask))
        k1 = k1.unsqueeze(0) + g * fd._fold(h16, layer1.cross_attn_token_to_image.k_proj)
        v1 = v1.unsqueeze(0) + g * fd._fold(h16, layer1.cross_attn_token_to_image.v_proj)
        dq = g * fd._fold(h16, layer1.cross_attn_image_to_token.q_proj)
        nh = layer1.cross_attn_image_to_token.num_heads
        q1 = q1.unsqueeze(0) + dq.view(b, dq.shape[1], nh, -1).transpose(1, 2)
        return self._transformer(tokens, src, pos, k1, v1, q1)

    def _transformer(self, tokens, src, pos, k1, v1, q1):
        queries, keys = self.fd.transformer(tokens, src, pos, k1, v1, q1)
        return self._heads(queries, keys)

    def _heads(self, queries, keys):
        """fast_decoder's upscaler + hypernetwork product, for all 4 mask tokens."""
        md = self.sam.mask_decoder
        side = self.sam.prompt_encoder.image_embedding_size[0]
        masks = self.fd.upscale_masks(queries, keys, (side, side), range(md.num_mask_tokens))
        return masks, md.iou_prediction_head(queries[:, 0, :])


class EncoderGraph(nn.Module):
    """image (1024, 1024, 3) uint8, resized and zero-padded at the bottom/right outside the
    graph; input_size (2,) int64 = its unpadded (h, w) -> image_embeddings (1, 256, 64, 64).
    Normalisation and padding (zeros after normalising, as Sam.preprocess) happen inside."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.encoder = sam.image_encoder
        side = sam.image_encoder.img_size
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1))
        self.register_buffer("ramp", torch.arange(side))

    def forward(self, image: torch.Tensor, input_size: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).float()
        x = (x - self.mean) / self.std
        keep = (self.ramp.view(-1, 1) < input_size[0]) & (self.ramp.view(1, -1) < input_size[1])
        return self.encoder(x * keep.to(x.dtype))

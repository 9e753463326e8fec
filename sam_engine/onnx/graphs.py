"""torch modules traced into ONNX by onnx_export (they need torch; the runtime never imports them).

Every decoder graph takes prompts the way Meta's ONNX decoder does: point_coords (B, N, 2) in the
resized 1024-frame, point_labels (B, N) with 1/0 = positive/negative point, 2/3 = box corners,
-1 = padding; mask_input (B, 1, 256, 256); has_mask_input (B,) or (1,). Ours return all four
mask tokens' low-res logits (B, 4, 256, 256) and IoU (B, 4) (token 0 = single-mask output,
1..3 = multimask), like Meta's low_res_masks; full-size upsampling is left to the runtime.
The encoder graphs normalise and pad as sam_engine.preprocess says, inside the graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from segment_anything.modeling import PromptEncoder, Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import nn

from sam_engine import preprocess
from sam_engine.encoders.input import mean_std
from sam_engine.sam.fast_decoder import FastMaskDecoder


def embed_points(pe: PromptEncoder, point_coords: torch.Tensor, point_labels: torch.Tensor,
                 img_size: int) -> torch.Tensor:
    """Sparse prompt embeddings (B, N, C) of Meta-style point prompts (coords in the resized
    img_size frame; labels 1/0 points, 2/3 box corners, -1 padding), as Meta's ONNX decoder
    embeds them: the random-Fourier encoding of the pixel centres (sin, cos of 2 pi (2 xy - 1)
    G), zero for padding, plus the learnt embedding of the label."""
    xy = (point_coords + 0.5) / img_size
    f = 2 * math.pi * ((2 * xy - 1) @ pe.pe_layer.positional_encoding_gaussian_matrix)
    emb = torch.cat([torch.sin(f), torch.cos(f)], dim=-1)
    labels = point_labels.unsqueeze(-1)
    emb = emb * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
    for i, point in enumerate(pe.point_embeddings):
        emb = emb + point.weight * (labels == i)
    return emb


class MetaDecoderGraph(SamOnnxModel):
    """Meta's export module as scripts/export_onnx_model.py uses it (return_single_mask=True):
    masks (1, 1, H, W) full-size logits for orig_im_size = (H, W), iou_predictions (1, 1),
    low_res_masks (1, 1, 256, 256); with more than 2 prompt points (padding included) the
    single-mask output, else the best multimask output by predicted IoU (select_masks).

    Only the final crop differs from segment_anything's code: it slices with the traced size
    tensors, where segment_anything's int() makes the tracer freeze the dummy image's crop,
    which leaves masks right for one aspect ratio only."""

    def __init__(self, sam: Sam) -> None:
        super().__init__(sam, return_single_mask=True)

    def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        side = self.img_size
        masks = F.interpolate(masks, size=(side, side), mode="bilinear", align_corners=False)
        prepadded = self.resize_longest_image_size(orig_im_size, side)
        masks = masks[..., : prepadded[0], : prepadded[1]]
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear",
                             align_corners=False)


def meta_decoder(sam: Sam) -> nn.Module:
    """Meta's ONNX decoder interface (see MetaDecoderGraph)."""
    return MetaDecoderGraph(sam)


class ImageTermsGraph(nn.Module):
    """image_embeddings (1, C, 64, 64) -> src, k1, v1 (HW, C|Ci), q1 (heads, HW, d); with
    split_heads also k1h, v1h: k1, v1 as (heads, HW, d) for ClickDecoderGraph."""

    def __init__(self, sam: Sam, split_heads: bool = False) -> None:
        super().__init__()
        self.sam = sam  # registered, so its weights are graph initialisers, not constants
        self.fd = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
        self.split_heads = split_heads

    def forward(self, image_embeddings: torch.Tensor):
        t = self.fd.image_terms(image_embeddings)
        if not self.split_heads:
            return t.src, t.k1, t.v1, t.q1
        nh = t.q1.shape[0]
        k1h, v1h = (x.reshape(x.shape[0], nh, -1).transpose(0, 1) for x in (t.k1, t.v1))
        return t.src, t.k1, t.v1, t.q1, k1h, v1h


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
        pe, md = self.sam.prompt_encoder, self.sam.mask_decoder
        sparse = embed_points(pe, point_coords, point_labels, self.sam.image_encoder.img_size)
        b = sparse.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        pos = pe.get_dense_pe()[0].flatten(1).t().unsqueeze(0)  # a constant of the graph
        if mask_input is None:
            return self._transformer(tokens, src.unsqueeze(0), pos, k1.unsqueeze(0),
                                     v1.unsqueeze(0), q1.unsqueeze(0))
        # fast_decoder's mask-input correction, gated by has_mask (0 leaves the no-mask terms)
        c = self.fd.mask_corrected({"src": src, "k1": k1, "v1": v1, "q1": q1}, mask_input,
                                   gate=has_mask)
        return self._transformer(tokens, pos=pos, **c)

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
    graph (preprocess.resize_longest, pad_to_square); input_size (2,) int64 = its unpadded
    (h, w) -> image_embeddings (1, 256, 64, 64). Normalisation and padding (zeros after
    normalising, preprocess.normalise / encoder_input) happen inside: the padding is zeroed
    again after normalising, from input_size."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.encoder = sam.image_encoder
        side = sam.image_encoder.img_size
        mean, std = mean_std()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("ramp", torch.arange(side))

    def forward(self, image: torch.Tensor, input_size: torch.Tensor) -> torch.Tensor:
        x = preprocess.normalise(image.permute(2, 0, 1).float(), self.mean, self.std)
        keep = (self.ramp.view(-1, 1) < input_size[0]) & (self.ramp.view(1, -1) < input_size[1])
        return self.encoder((x * keep.to(x.dtype)).unsqueeze(0))


class FloatEncoderGraph(nn.Module):
    """samexporter's / X-AnyLabeling's encoder convention: input_image (H, W, 3) float32 RGB
    0..255, H and W at most img_size (dynamic), already resized by the caller; normalised,
    zero-padded at the bottom/right to img_size x img_size after normalising (as
    Sam.preprocess) and encoded inside -> image_embeddings (1, 256, 64, 64)."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.encoder = sam.image_encoder
        mean, std = mean_std()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = preprocess.normalise(input_image.permute(2, 0, 1), self.mean, self.std)
        bottom, right = preprocess.pad_widths(x.shape[1], x.shape[2], self.encoder.img_size)
        return self.encoder(F.pad(x, (0, right, 0, bottom)).unsqueeze(0))


# ---------------------------------------------------------------- one prompt, laid out for ORT
class ClickDecoderGraph(nn.Module):
    """fast_decoder's exact decoder for ONE prompt without mask input, written for onnxruntime's
    CPU kernels rather than traced from the batched torch code (same weights, same math):

    * batch 1 is static and every reshape uses -1 or constants, so the graph has no runtime
      shape arithmetic (the dynamic graphs spend ~2 ms per call on Shape/Gather/Concat nodes);
    * layer 1's image terms come split per head (k1h, v1h: image_terms.onnx), no transposes;
    * the softmax over the ~7 tokens of image->token attention is written out (max, exp, sum):
      onnxruntime's Softmax on a non-innermost axis transposes internally and is ~10x slower;
    * the upscaler's pixel shuffle is one 2-D transpose, a row Gather and DepthToSpace instead
      of an 8-D Transpose with 16-byte runs (about 3x faster in onnxruntime);
    * the final token->image attention runs for the IoU and mask tokens only (their outputs
      are all the heads read).
    Inputs: src (HW, C), k1h/v1h/q1 (heads, HW, d), point_coords (1, N, 2), point_labels (1, N).
    Outputs like FastDecoderGraph: low_res_masks (1, 4, 256, 256), iou_predictions (1, 4).
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam
        self.fd = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
        pos = sam.prompt_encoder.get_dense_pe()[0].flatten(1).t().contiguous()
        self.register_buffer("pos", pos.detach())
        m = sam.mask_decoder.num_mask_tokens
        # channel order (ky, kx, ky2, kx2, m) -> (m, ky, ky2, kx, kx2) for pixel_shuffle (CRD)
        order = torch.arange(16 * m).reshape(2, 2, 2, 2, m).permute(4, 0, 2, 1, 3)
        self.register_buffer("shuffle", order.reshape(-1))

    def forward(self, src, k1h, v1h, q1, point_coords, point_labels):
        md, tf = self.sam.mask_decoder, self.sam.mask_decoder.transformer
        sparse = embed_points(self.sam.prompt_encoder, point_coords, point_labels,
                              self.sam.image_encoder.img_size)[0]  # N, C
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight, sparse], dim=0)
        queries, keys = tokens, src
        hw = int(self.pos.shape[0])
        for i, layer in enumerate(tf.layers):
            if i == 0:
                queries = layer.norm1(_self_attn(layer.self_attn, queries, queries, queries))
                attn = _t2i_split(layer.cross_attn_token_to_image, queries + tokens, k1h, v1h)
            else:
                q = queries + tokens
                queries = layer.norm1(queries + _self_attn(layer.self_attn, q, q, queries))
                keys_pos = keys + self.pos
                attn = _t2i(layer.cross_attn_token_to_image, queries + tokens, keys_pos, keys)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(_i2t(layer.cross_attn_image_to_token, q1 if i == 0 else keys_pos,
                                    queries + tokens, queries, keys, i == 0, hw))
        # the final attention only for the IoU and mask tokens: the prompt tokens' outputs are
        # not used by any head
        n_out = 1 + md.num_mask_tokens
        attn = _t2i(tf.final_attn_token_to_image, (queries + tokens)[:n_out], keys + self.pos,
                    keys)
        queries = tf.norm_final_attn(queries[:n_out] + attn)
        iou = md.iou_prediction_head(queries[0:1])
        return self._masks(queries, keys), iou

    def _masks(self, queries, keys):
        """Upscaler + hypernetwork product for all 4 mask tokens -> (1, 4, 4h, 4w)."""
        md = self.sam.mask_decoder
        m = md.num_mask_tokens
        side = self.sam.prompt_encoder.image_embedding_size[0]
        hyper = torch.stack([md.output_hypernetworks_mlps[i](queries[1 + i]) for i in range(m)],
                            dim=1)  # C2, M
        w1, b1, ln, w2, b2 = self.fd.upscaler
        c1, c2 = int(ln.weight.shape[0]), int(w2.shape[1]) // 4
        x = torch.addmm(b1, keys, w1).reshape(-1, c1)  # (HW*4, C1), rows (i, j, ky, kx)
        x = F.gelu(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps))
        x = F.gelu(torch.addmm(b2, x, w2))  # (HW*4, 4*C2), columns (ky2, kx2, c2)
        x = x.reshape(-1, c2) @ hyper  # (HW*16, M), rows (i, j, ky, kx, ky2, kx2)
        x = x.reshape(side * side, 16 * m).t()  # (16*M, HW): rows (ky, kx, ky2, kx2, m)
        x = x.index_select(0, self.shuffle).reshape(1, 16 * m, side, side)  # (m, ky, ky2, ...)
        return F.pixel_shuffle(x, 4)  # DepthToSpace (CRD): (1, M, 4h, 4w)


def _heads2(x: torch.Tensor, a) -> torch.Tensor:
    """(N, Ci) -> (heads, N, d) for Attention a."""
    return x.reshape(-1, a.num_heads, a.internal_dim // a.num_heads).transpose(0, 1)


def _self_attn(a, q, k, v):
    """Attention.forward for 2-D token tensors (N, C), with -1 reshapes (no shape arithmetic)."""
    nh, d = a.num_heads, a.internal_dim // a.num_heads
    qh, kh, vh = _heads2(a.q_proj(q), a), _heads2(a.k_proj(k), a), _heads2(a.v_proj(v), a)
    attn = torch.softmax((qh @ kh.transpose(1, 2)) * (1.0 / math.sqrt(d)), dim=-1)
    return a.out_proj((attn @ vh).transpose(0, 1).reshape(-1, nh * d))


def _t2i_split(a, q_tokens, kh, vh):
    """Token->image attention on image keys/values projected and split per head (layer 1)."""
    nh, d = a.num_heads, a.internal_dim // a.num_heads
    q = _heads2(a.q_proj(q_tokens), a)  # H, Nt, d
    attn = torch.softmax((q * (1.0 / math.sqrt(d))) @ kh.transpose(1, 2), dim=-1)  # H, Nt, HW
    return a.out_proj((attn @ vh).transpose(0, 1).reshape(-1, nh * d))


def _t2i(a, q_tokens, k_img, v_img):
    """fast_decoder._token_to_image for B=1: the image side is never projected."""
    nh, d, c = a.num_heads, a.internal_dim // a.num_heads, a.embedding_dim
    q = _heads2(a.q_proj(q_tokens), a) * (1.0 / math.sqrt(d))  # H, Nt, d
    wk = a.k_proj.weight.reshape(nh, d, c)
    qk = (q @ wk).reshape(-1, c)  # (H*Nt, C)
    qb = (q * a.k_proj.bias.reshape(nh, 1, d)).sum(-1).reshape(-1, 1)
    attn = torch.softmax(torch.addmm(qb, qk, k_img.t()), dim=-1)  # H*Nt, HW
    pv = (attn @ v_img).reshape(nh, -1, c)  # H, Nt, C
    wv = a.v_proj.weight.reshape(nh, d, c)
    out = pv @ wv.transpose(1, 2) + a.v_proj.bias.reshape(nh, 1, d)  # H, Nt, d
    return a.out_proj(out.transpose(0, 1).reshape(-1, nh * d))


def _i2t(a, q_img, k_tokens, v_tokens, residual, projected: bool, hw: int):
    """residual + image->token attention (fast_decoder._image_to_token for B=1); q_img is
    (H, HW, d) projected (layer 1) or the (HW, C) image tokens."""
    nh, d, c = a.num_heads, a.internal_dim // a.num_heads, a.embedding_dim
    k = _heads2(a.k_proj(k_tokens), a) * (1.0 / math.sqrt(d))  # H, Nt, d
    v = _heads2(a.v_proj(v_tokens), a)
    if projected:
        scores = k @ q_img.transpose(1, 2)  # H, Nt, HW
    else:
        wq = a.q_proj.weight.reshape(nh, d, c)
        g = (k @ wq).reshape(-1, c)  # H*Nt, C
        kb = (k * a.q_proj.bias.reshape(nh, 1, d)).sum(-1).reshape(-1, 1)
        scores = torch.addmm(kb, g, q_img.t()).reshape(nh, -1, hw)
    # softmax over the tokens (axis 1), written out: see ClickDecoderGraph
    e = torch.exp(scores - scores.amax(dim=1, keepdim=True))
    attn = (e / e.sum(dim=1, keepdim=True)).reshape(-1, hw)  # H*Nt, HW
    wo = a.out_proj.weight.reshape(c, nh, d).permute(1, 2, 0)  # H, d, C
    u = (v @ wo + a.out_proj.bias / nh).reshape(-1, c)  # H*Nt, C
    return torch.addmm(residual, attn.t(), u)

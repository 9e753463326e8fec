"""SAM's prompt decoder, computed with less work per prompt and the official weights unchanged.

Meta's MaskDecoder projects all 4096 image tokens in every attention layer for every prompt
(about 3.6 GFLOP). Two exact rewrites remove most of that:

* Terms that depend only on the image (its embedding plus positional encoding, and their
  first-layer key/value/query projections) are computed once per image (`ImageTerms`).
* Attention between a few prompt tokens (Nt ~ 7) and 4096 image tokens is reassociated so the
  image side is never projected: for token->image attention, scores are ``(q_h W_k,h) X^T`` and
  outputs ``(P_h X) W_v,h^T``; for image->token attention, scores are ``X (W_q,h^T k_h^T)`` and
  the output projection folds into the token values (``P_h (v_h W_o,h^T)``). Each costs one
  (HW x C x heads*Nt) matmul instead of an (HW x C x C/2) projection.

The results equal MaskDecoder's up to float rounding (tests compare with SamPredictor). Written by
hand because no library reorders a transformer's matmuls this way; the modules' own forward is
used wherever the work is per-token only (self-attention, MLPs, upscaling, heads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder
from segment_anything.modeling.transformer import Attention
from torch import Tensor


@dataclass
class ImageTerms:
    """Per-image decoder inputs for a prompt without mask input (the dense prompt embedding is
    then a constant, folded in here); float tensors on the model's device."""

    src: Tensor  # (HW, C) image embedding + no-mask dense embedding: layer-1 keys
    pos: Tensor  # (HW, C) dense positional encoding
    k1: Tensor  # (HW, Ci) layer-1 token->image key projection of src + pos
    v1: Tensor  # (HW, Ci) layer-1 token->image value projection of src
    q1: Tensor  # (heads, HW, d) layer-1 image->token query projection of src + pos, per head
    size: tuple[int, int]  # embedding grid (h, w)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.src, self.pos, self.k1, self.v1,
                                                           self.q1))

    def layer1(self) -> dict[str, Tensor]:
        """The terms a mask input corrects, by name (FastMaskDecoder.mask_corrected)."""
        return {"src": self.src, "k1": self.k1, "v1": self.v1, "q1": self.q1}


def _heads(w: Tensor, n_heads: int) -> Tensor:
    """A projection weight (Ci, C) as (heads, d, C)."""
    return w.reshape(n_heads, w.shape[0] // n_heads, w.shape[1])


class FastMaskDecoder:
    """Decode prompts against precomputed ImageTerms with a SAM PromptEncoder + MaskDecoder."""

    def __init__(
        self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, chunk: int | None = None
    ) -> None:
        """chunk: prompts decoded per pass over the image tokens (None = all at once). On a CPU,
        1 is fastest: a (chunk, 4096, 256) float tensor should stay inside the L2/L3 cache."""
        self.chunk = chunk
        self.pe = prompt_encoder
        self.md = mask_decoder
        self.tf = mask_decoder.transformer
        layer1 = self.tf.layers[0]
        if not layer1.skip_first_layer_pe or len(self.tf.layers) < 1:
            raise ValueError("unexpected MaskDecoder layout: first layer must skip the query PE")
        # The dense (mask) embedding enters layer 1 only through linear maps, so its effect on the
        # cached projections is folded into small matrices: dense = H16 @ Wc^T + bc with H16 the
        # 16-channel output of mask_downscaling[:-1], and proj(dense) = H16 @ (Wc^T W^T) + bc W^T.
        last = prompt_encoder.mask_downscaling[-1]
        self._wc = last.weight.detach()[:, :, 0, 0]  # (C, 16)
        self._bc = last.bias.detach()  # (C,)
        self._no_mask = prompt_encoder.no_mask_embed.weight.detach()[0]  # (C,)
        self.upscaler = upscaler_weights(mask_decoder)
        self._mask_factors: dict[str, Tensor] | None = None

    # ----------------------------------------------------------------- per image
    @torch.no_grad()
    def image_terms(self, embedding: Tensor) -> ImageTerms:
        """embedding: (1, C, h, w) from the image encoder."""
        _, c, h, w = embedding.shape
        src = embedding[0].flatten(1).t().float() + self._no_mask
        pos = self.pe.get_dense_pe().to(src.device)[0].flatten(1).t().contiguous().float()
        src_pos = src + pos
        layer1 = self.tf.layers[0]
        t2i, i2t = layer1.cross_attn_token_to_image, layer1.cross_attn_image_to_token
        nh = i2t.num_heads
        q1 = i2t.q_proj(src_pos)
        return ImageTerms(
            src=src,
            pos=pos,
            k1=t2i.k_proj(src_pos),
            v1=t2i.v_proj(src),
            q1=q1.view(h * w, nh, -1).transpose(0, 1).contiguous(),
            size=(h, w),
        )

    # ----------------------------------------------------------------- per prompt
    @torch.no_grad()
    def __call__(
        self,
        terms: ImageTerms,
        sparse: Tensor,
        mask_input: Tensor | None,
        multimask_output: bool,
    ) -> tuple[Tensor, Tensor]:
        """sparse: (B, N, C) prompt embeddings; mask_input: (B, 1, 256, 256) logits or None.

        Returns low-res mask logits (B, M, 256, 256) and predicted IoU (B, M) with M = 3 or 1,
        like MaskDecoder.forward.
        """
        b = sparse.shape[0]
        step = b if self.chunk is None else self.chunk
        if b > step:
            parts = [
                self(terms, sparse[i : i + step],
                     None if mask_input is None else mask_input[i : i + step], multimask_output)
                for i in range(0, b, step)
            ]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        md = self.md
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)

        pos = terms.pos.unsqueeze(0)
        if mask_input is None:
            src, k1, v1, q1 = (t.unsqueeze(0) for t in (terms.src, terms.k1, terms.v1, terms.q1))
        else:
            c = self.mask_corrected(terms.layer1(), mask_input)
            src, k1, v1, q1 = c["src"], c["k1"], c["v1"], c["q1"]
        queries, keys = self.transformer(tokens, src, pos, k1, v1, q1)
        return self._heads(queries, keys, terms.size, multimask_output)

    def mask_rows(self, mask_input: Tensor) -> Tensor:
        """(B, HW, 17): the mask input's 16 downscaled channels (mask_downscaling without its
        last conv) per image token, and a column of ones. Every layer-1 image term t then is
        t(no mask) + mask_rows @ mask_factors()[t]."""
        h16 = self.pe.mask_downscaling[:-1](mask_input).flatten(2).transpose(1, 2)  # B, HW, 16
        return torch.cat([h16, h16.new_ones(*h16.shape[:2], 1)], dim=2)

    def mask_factors(self) -> dict[str, Tensor]:
        """The factors of mask_rows per layer-1 term, named and laid out as image_terms.onnx's
        outputs: src, k1, v1 (17, n) and q1, k1h, v1h per head (heads, 17, d). The dense
        embedding H16 @ Wc^T + bc replaces the no-mask constant, so a term with projection W
        changes by [H16, 1] @ [[Wc^T W^T], [(bc - no_mask) W^T]] (W = I for src)."""
        if self._mask_factors is None:
            layer1 = self.tf.layers[0]
            t2i, i2t = layer1.cross_attn_token_to_image, layer1.cross_attn_image_to_token
            wc, c0 = self._wc.t(), (self._bc - self._no_mask)[None]  # (16, C), (1, C)
            f = {"src": torch.cat([wc, c0])}
            for name, proj in (("k1", t2i.k_proj), ("v1", t2i.v_proj), ("q1", i2t.q_proj)):
                w = proj.weight.detach().t()  # (C, Ci)
                f[name] = torch.cat([wc @ w, c0 @ w])
            for name, a in (("k1", t2i), ("v1", t2i), ("q1", i2t)):
                f[name + "h"] = f[name].view(17, a.num_heads, -1).transpose(0, 1).contiguous()
            f["q1"] = f.pop("q1h")  # ImageTerms.q1 is per head already
            self._mask_factors = f
        return self._mask_factors

    def mask_corrected(self, terms: Mapping[str, Tensor], mask_input: Tensor,
                       gate: Tensor | None = None) -> dict[str, Tensor]:
        """Layer-1 image terms for a mask input (B, 1, 256, 256): t + mask_rows @ factor, one
        fused multiply-add per term. The one mask-input correction of the PyTorch decoder, the
        ONNX graphs and the click decoder's inputs.

        terms: unbatched, named as image_terms.onnx's outputs (src, k1, v1: (HW, n); q1, k1h,
        v1h: (heads, HW, d)); returns them batched, (B, HW, n) and (B, heads, HW, d). gate (B,):
        per-prompt factor of the correction (the graphs' has_mask_input: 0 keeps the no-mask
        terms exactly)."""
        rows = self.mask_rows(mask_input)  # B, HW, 17
        if gate is not None:
            rows = rows * gate.reshape(-1, 1, 1).to(rows.dtype)
        factors = self.mask_factors()
        b, hw, k = rows.shape
        out = {}
        for name, t in terms.items():
            f = factors[name]
            if t.dim() == 2:
                out[name] = torch.baddbmm(t.expand(b, -1, -1), rows, f.expand(b, -1, -1))
                continue
            nh, _, d = t.shape
            per_head = torch.baddbmm(t.expand(b, -1, -1, -1).reshape(b * nh, hw, d),
                                     rows[:, None].expand(-1, nh, -1, -1).reshape(b * nh, hw, k),
                                     f.expand(b, -1, -1, -1).reshape(b * nh, k, d))
            out[name] = per_head.view(b, nh, hw, d)
        return out

    def transformer(
        self, tokens: Tensor, src: Tensor, pos: Tensor, k1: Tensor, v1: Tensor, q1: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The two-way transformer, reassociated: (queries, keys) like TwoWayTransformer's, with
        queries for the output tokens only (IoU + mask tokens; the prompt tokens' are never read).

        tokens (B, Nt, C); src, pos (1|B, HW, C); k1, v1 (1|B, HW, Ci) and q1 (1|B, H, HW, d):
        layer 1's projected image terms (ImageTerms plus any mask-input correction).
        """
        tf = self.tf
        queries, keys = tokens, src
        for i, layer in enumerate(tf.layers):
            if i == 0:
                queries = layer.norm1(layer.self_attn(q=queries, k=queries, v=queries))
                attn = _token_to_image_projected(
                    layer.cross_attn_token_to_image, queries + tokens, k1, v1
                )
                keys_pos = None
            else:
                q = queries + tokens
                queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
                keys_pos = keys + pos  # used by both cross attentions of this layer
                attn = _token_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                       keys_pos, keys)
            queries = layer.norm2(queries + attn)
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = _image_to_token(
                layer.cross_attn_image_to_token,
                q1 if i == 0 else keys_pos,
                queries + tokens,
                queries,
                residual=keys,
                projected_queries=(i == 0),
            )
            keys = layer.norm4(keys)

        # the final attention only for the IoU and mask tokens: no head reads the prompt tokens
        n = 1 + self.md.num_mask_tokens
        attn = _token_to_image(tf.final_attn_token_to_image, (queries + tokens)[:, :n],
                               keys + pos, keys)
        queries = tf.norm_final_attn(queries[:, :n] + attn)

        return queries, keys

    def _heads(
        self, queries: Tensor, keys: Tensor, size: tuple[int, int], multimask_output: bool
    ) -> tuple[Tensor, Tensor]:
        sl = slice(1, None) if multimask_output else slice(0, 1)
        masks = self.upscale_masks(queries, keys, size, range(self.md.num_mask_tokens)[sl])
        return masks, self.md.iou_prediction_head(queries[:, 0, :])[:, sl]

    def upscale_masks(
        self, queries: Tensor, keys: Tensor, size: tuple[int, int], idx: range
    ) -> Tensor:
        """Low-res logits (B, len(idx), 4h, 4w) of mask tokens idx. The upscaler (ConvTranspose
        2x2/2, LayerNorm2d, GELU, ConvTranspose 2x2/2, GELU) runs as per-pixel matmuls in
        channels-last order, where LayerNorm2d becomes one fused layer_norm and no NCHW copies
        are made; pixels are put in raster order only for the final few mask channels."""
        md = self.md
        b, hw, c = keys.shape
        h, w = size
        hyper_in = torch.stack(
            [md.output_hypernetworks_mlps[i](queries[:, 1 + i, :]) for i in idx], dim=2
        )  # B, 32, M
        w1, b1, ln, w2, b2 = self.upscaler
        x = torch.addmm(b1, keys.reshape(b * hw, c), w1)  # (B*HW, 4*C1) as (ky, kx, c1)
        c1 = ln.normalized_shape[0]
        x = torch.nn.functional.layer_norm(x.view(-1, c1), (c1,), ln.weight, ln.bias, ln.eps)
        x = torch.nn.functional.gelu(x)
        x = torch.addmm(b2, x, w2)  # (B*HW*4, 4*C2) as (ky2, kx2, c2)
        x = torch.nn.functional.gelu(x)
        c2 = w2.shape[1] // 4
        masks = torch.bmm(x.view(b, hw * 16, c2), hyper_in)  # B, HW*16, M
        m = masks.shape[-1]
        # pixel (i, j, ky, kx, ky2, kx2) sits at row 4i + 2ky + ky2, column 4j + 2kx + kx2
        masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, m, 4 * h, 4 * w)


def upscaler_weights(md: MaskDecoder):
    """ConvTranspose2d(k=2, s=2) weights (in, out, 2, 2) as (in, 4*out) matrices ordered
    (ky, kx, out), with biases repeated to match, plus the LayerNorm2d between them."""
    conv1, ln, act1, conv2, act2 = md.output_upscaling
    if not (isinstance(conv1, torch.nn.ConvTranspose2d) and conv1.kernel_size == (2, 2)
            and conv1.stride == (2, 2) and isinstance(act1, torch.nn.GELU)
            and isinstance(act2, torch.nn.GELU)):
        raise ValueError("unexpected MaskDecoder.output_upscaling layout")

    def mat(conv):
        wt = conv.weight.detach()  # in, out, ky, kx
        return wt.permute(0, 2, 3, 1).reshape(wt.shape[0], -1), conv.bias.detach().repeat(4)

    w1, b1 = mat(conv1)
    w2, b2 = mat(conv2)
    return w1, b1, LayerNormParams(ln.weight.detach(), ln.bias.detach(), ln.eps), w2, b2


@dataclass
class LayerNormParams:
    """The LayerNorm2d of the upscaler, applied channels-last with layer_norm."""

    weight: Tensor
    bias: Tensor
    eps: float

    @property
    def normalized_shape(self) -> tuple[int]:
        return (self.weight.shape[0],)


def _split(x: Tensor, n_heads: int) -> Tensor:
    """(B, N, Ci) -> (B, heads, N, d)."""
    b, n, ci = x.shape
    return x.view(b, n, n_heads, ci // n_heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, heads, N, d) -> (B, N, Ci)."""
    b, nh, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, nh * d)


def _token_to_image_projected(a: Attention, q_tokens: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Token->image attention whose image keys/values are already projected (layer 1)."""
    nh = a.num_heads
    q = _split(a.q_proj(q_tokens), nh)  # B, H, Nt, d
    kh = _split(k, nh)  # b|1, H, HW, d
    vh = _split(v, nh)
    attn = torch.softmax((q @ kh.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)
    return a.out_proj(_merge(attn @ vh))


def _token_to_image(a: Attention, q_tokens: Tensor, k_img: Tensor, v_img: Tensor) -> Tensor:
    """Token->image attention without projecting the image tokens.

    scores_h = (q_h W_k,h) k_img^T + q_h . b_k,h ;  out_h = (P_h v_img) W_v,h^T + b_v,h
    (softmax rows sum to one, so the value bias passes through unchanged).
    """
    nh = a.num_heads
    b, nt, c = q_tokens.shape
    q = _split(a.q_proj(q_tokens), nh)  # B, H, Nt, d
    d = q.shape[-1]
    wk = _heads(a.k_proj.weight, nh)  # H, d, C
    q = q * (1.0 / math.sqrt(d))
    qk = torch.einsum("bhnd,hdc->bhnc", q, wk).reshape(b, nh * nt, c)
    qb = (q * a.k_proj.bias.view(1, nh, 1, d)).sum(-1).reshape(b, nh * nt, 1)
    scores = torch.baddbmm(qb, qk, k_img.transpose(1, 2))  # B, H*Nt, HW
    attn = torch.softmax(scores, dim=-1)
    pv = torch.bmm(attn, v_img).view(b, nh, nt, c)  # B, H, Nt, C
    wv = _heads(a.v_proj.weight, nh)
    out = torch.einsum("bhnc,hdc->bhnd", pv, wv) + a.v_proj.bias.view(1, nh, 1, d)
    return a.out_proj(_merge(out))


def _image_to_token(
    a: Attention,
    q_img: Tensor,
    k_tokens: Tensor,
    v_tokens: Tensor,
    residual: Tensor,
    projected_queries: bool,
) -> Tensor:
    """residual + image->token attention, without projecting the image tokens (layer 1: with
    them given already projected, as (1|B, heads, HW, d)).

    scores_h = q_img (W_q,h^T k_h^T) + b_q,h . k_h ;  out = sum_h P_h (v_h W_o,h^T + b_o / H),
    where the output bias is spread over the heads' value rows (each P_h row sums to one).
    Scores are laid out (B, H, Nt, HW) so the softmax over the few tokens runs along a
    non-innermost axis (vectorised over pixels; an innermost axis of ~7 is slow on CPU).
    """
    nh = a.num_heads
    b, nt, c = k_tokens.shape
    k = _split(a.k_proj(k_tokens), nh)  # B, H, Nt, d
    v = _split(a.v_proj(v_tokens), nh)
    d = k.shape[-1]
    k = k * (1.0 / math.sqrt(d))
    if projected_queries:
        scores = k @ q_img.transpose(-1, -2)  # B, H, Nt, HW
    else:
        wq = _heads(a.q_proj.weight, nh)  # H, d, C
        g = torch.einsum("hdc,bhnd->bhnc", wq, k).reshape(b, nh * nt, c)
        kb = (k * a.q_proj.bias.view(1, nh, 1, d)).sum(-1).reshape(b, nh * nt, 1)
        scores = torch.baddbmm(kb, g, q_img.expand(b, -1, -1).transpose(1, 2))  # B, H*Nt, HW
    hw = scores.shape[-1]
    attn = torch.softmax(scores.view(b, nh, nt, hw), dim=2).view(b, nh * nt, hw)
    wo = a.out_proj.weight.view(c, nh, d)  # C, H, d
    u = torch.einsum("bhnd,chd->bhnc", v, wo) + a.out_proj.bias / nh
    return torch.baddbmm(residual.expand(b, -1, -1), attn.transpose(1, 2),
                         u.reshape(b, nh * nt, c))

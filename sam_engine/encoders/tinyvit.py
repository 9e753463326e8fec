"""Fast twin of MobileSAM's TinyViT image encoder (vit_t); built by encoder_fast.fast_encoder.

What differs from `mobile_sam.modeling.tiny_vit_sam` (same function, same state-dict keys):

- attention through `F.scaled_dot_product_attention`, the learned per-offset bias
  (`attention_biases[:, attention_bias_idxs]`, gathered each call so it follows the weights) as
  the additive mask, broadcast over windows;
- the attention's LayerNorm and qkv projection run before window partitioning on the real
  tokens only; the padded tokens (zeros before the norm, so the norm's bias after it) get
  qkv(norm.bias), written by the one-pass partition of encoder_windows;
- every Conv2d + BatchNorm pair evaluated as one convolution with the BatchNorm folded into
  its weights (inference statistics, folded when the twin is built);
- the local depthwise convolution and patch merging read and write the token layout directly
  as channels-last images (no transpose copies);
- on a CPU (eager): the patch embedding, the MBConvs and the patch mergings evaluated in row
  strips (1x1 convolutions as GEMMs, GELU in place), the MLPs over token chunks (encoder_cpu:
  the full-resolution intermediates never exist whole).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_engine.encoders.cpu_strips import ConvStep, cpu_path, mlp_residual, run_strips
from sam_engine.encoders.windows import merge, partition


class FusedConvBN(nn.Module):
    """MobileSAM's Conv2d_BN (children `c` and `bn` kept for the state dict) as one conv."""

    def __init__(self, cbn: nn.Module) -> None:
        super().__init__()
        self.c, self.bn = cbn.c, cbn.bn
        with torch.no_grad():
            scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            weight = self.c.weight * scale[:, None, None, None]
            bias = self.bn.bias - self.bn.running_mean * scale
        self.register_buffer("fused_weight", weight, persistent=False)
        self.register_buffer("fused_bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        return F.conv2d(x, self.fused_weight, self.fused_bias, c.stride, c.padding, c.dilation,
                        c.groups)


class FastMBConv(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.conv1, self.act1 = FusedConvBN(m.conv1), m.act1
        self.conv2, self.act2 = FusedConvBN(m.conv2), m.act2
        self.conv3, self.act3 = FusedConvBN(m.conv3), m.act3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_path(x):
            steps = [ConvStep.of(self.conv1, self.act1), ConvStep.of(self.conv2, self.act2),
                     ConvStep.of(self.conv3)]
            return run_strips(x, steps, residual=x, final_gelu=self.act3.approximate)
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class FastPatchMerging(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.input_resolution = m.input_resolution
        self.act = m.act
        self.conv1, self.conv2, self.conv3 = (FusedConvBN(m.conv1), FusedConvBN(m.conv2),
                                              FusedConvBN(m.conv3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(len(x), h, w, -1).permute(0, 3, 1, 2)  # a channels-last image, no copy
        if cpu_path(x):
            x = run_strips(x, [ConvStep.of(self.conv1, self.act),
                               ConvStep.of(self.conv2, self.act), ConvStep.of(self.conv3)])
        else:
            x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class FastTinyAttention(nn.Module):
    """TinyViT's Attention (same norm/qkv/proj/attention_biases) through SDPA."""

    def __init__(self, a: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.d = a.num_heads, a.key_dim, a.d
        self.norm, self.qkv, self.proj = a.norm, a.qkv, a.proj
        self.attention_biases = a.attention_biases
        self.register_buffer("attention_bias_idxs", a.attention_bias_idxs.clone(),
                             persistent=False)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(N, L, heads * (2 key_dim + d)) -> (N, heads, L, d)."""
        n, length, _ = qkv.shape
        kd = self.key_dim
        t = qkv.view(n, length, self.num_heads, -1)
        q, k, v = (t[..., :kd].transpose(1, 2), t[..., kd:2 * kd].transpose(1, 2),
                   t[..., 2 * kd:].transpose(1, 2))
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        if q.is_cuda and length % 16:  # aligned rows for the memory-efficient kernel
            bias = F.pad(bias, (0, -length % 16))[..., :length]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))


class FastTinyViTBlock(nn.Module):
    compile_unit = True  # encoder_fast.compile_encoder compiles each of these

    def __init__(self, blk: nn.Module) -> None:
        super().__init__()
        self.input_resolution, self.window_size = blk.input_resolution, blk.window_size
        self.attn = FastTinyAttention(blk.attn)
        self.mlp = blk.mlp
        self.local_conv = FusedConvBN(blk.local_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, length, c = x.shape
        ws, a = self.window_size, self.attn
        qkv = a.qkv(a.norm(x))
        if h == ws and w == ws:
            o = a.attend(qkv).transpose(1, 2).reshape(b, length, -1)
        else:
            fill = a.qkv(a.norm.bias)  # padded tokens are zeros before the norm
            win = partition(qkv.view(b, h, w, -1), ws, fill)
            o = a.attend(win.flatten(1, 2))  # (N, heads, ws*ws, d)
            o = merge(o.transpose(1, 2).unflatten(1, (ws, ws)), ws, b, h, w).view(b, length, -1)
        x = x + a.proj(o)
        y = self.local_conv(x.view(b, h, w, c).permute(0, 3, 1, 2))  # channels-last image
        x = y.permute(0, 2, 3, 1).reshape(b, length, c)
        if cpu_path(x):
            m = self.mlp
            return mlp_residual(x, m.norm, m.fc1, m.act, m.fc2)
        return x + self.mlp(x)


class _FastLayer(nn.Module):
    def __init__(self, layer: nn.Module, block_type) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(block_type(b) for b in layer.blocks)
        self.downsample = (FastPatchMerging(layer.downsample) if layer.downsample is not None
                           else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class FastTinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder with the fast pieces above; same state-dict keys."""

    def __init__(self, enc: nn.Module, mask_budget: int = 0) -> None:
        super().__init__()
        self.img_size = enc.img_size
        seq = enc.patch_embed.seq
        self.patch_embed = nn.Module()
        self.patch_embed.seq = nn.Sequential(FusedConvBN(seq[0]), seq[1], FusedConvBN(seq[2]))
        self.layers = nn.ModuleList(
            _FastLayer(layer, FastMBConv if i == 0 else FastTinyViTBlock)
            for i, layer in enumerate(enc.layers)
        )
        self.norm_head, self.head = enc.norm_head, enc.head  # unused; kept for the state dict
        self.neck = enc.neck

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.patch_embed.seq[0].fused_weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        seq = self.patch_embed.seq
        x = (run_strips(x, [ConvStep.of(seq[0], seq[1]), ConvStep.of(seq[2])]) if cpu_path(x)
             else seq(x))
        for layer in self.layers:
            x = layer(x)
        b, length, c = x.shape
        side = int(round(length ** 0.5))
        return self.neck(x.view(b, side, side, c).permute(0, 3, 1, 2)).float()

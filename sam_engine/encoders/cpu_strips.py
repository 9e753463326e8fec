"""CPU paths of the encoder twins: conv chains evaluated in row strips, token-chunked MLPs.

Why: on a CPU the high-resolution stages of TinyViT (256 x 256 maps of up to 256 channels, 64 MB
a tensor) are bound by memory traffic and, worse, by first-touch page faults: glibc serves every
allocation above its mmap threshold (32 MiB at most) with fresh pages, so each new full-size
tensor costs a fault per 4 KiB page (measured here: a GELU over 64 MB takes 52 ms out of place,
8 ms in place). A chain evaluated strip by strip keeps its intermediates at a few MB (in cache,
in reused heap memory) and only the chain's output is written whole. Results equal the plain
modules' within fp32 rounding (tests/test_encoder_fast.py).

oneDNN's fused convolution + GELU (the private torch.ops.mkldnn._convolution_pointwise) was
measured here too: with the strips and the 1x1 GEMMs below it gained nothing (692 vs 691 ms per
vit_t forward), so only public ops are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STRIP_BYTES = 4 << 20  # widest intermediate of one strip (fits the last-level cache)
MLP_CHUNK_BYTES = 4 << 20  # MLP hidden activations per token chunk


def cpu_path(x: torch.Tensor) -> bool:
    """Whether a twin takes its CPU-specific path for `x` (eager CPU only: CUDA and compiled
    graphs keep the plain modules)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


@dataclass(frozen=True)
class ConvStep:
    """One convolution of a chain (weights with BatchNorm folded in) and its activation:
    `gelu` is the GELU approximation ("none" / "tanh") or None for no activation."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    padding: int
    groups: int
    gelu: str | None = None

    @classmethod
    def of(cls, conv: nn.Module, act: nn.Module | None = None) -> ConvStep:
        """From an encoder_tinyvit.FusedConvBN and its activation module (nn.GELU or None)."""
        c = conv.c
        if c.stride[0] != c.stride[1] or c.padding[0] != c.padding[1] or c.dilation != (1, 1):
            raise ValueError("strips need square strides and paddings, no dilation")
        if act is not None and not isinstance(act, nn.GELU):
            raise ValueError(f"strips know GELU only, not {type(act).__name__}")
        return cls(conv.fused_weight, conv.fused_bias, c.stride[0], c.padding[0], c.groups,
                   None if act is None else act.approximate)

    @property
    def kernel(self) -> int:
        return self.weight.shape[-2]

    @property
    def pointwise(self) -> bool:
        return self.kernel == 1 and self.weight.shape[-1] == 1 and self.stride == 1 and (
            self.groups == 1 and self.padding == 0)

    def out_len(self, n: int) -> int:
        return (n + 2 * self.padding - self.kernel) // self.stride + 1


def _gelu_(t: torch.Tensor, approximate: str) -> torch.Tensor:
    return torch.ops.aten.gelu_(t, approximate=approximate)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> its (N*H*W, C) matrix (a view when t is contiguous)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def conv(x: torch.Tensor, s: ConvStep, padding: tuple[int, int],
         out: torch.Tensor | None = None) -> torch.Tensor:
    """s's convolution (with `padding` (rows, columns)) and activation, channels-last; written
    into `out` (channels-last, contiguous rows) when given, else into a new tensor.

    1x1 convolutions run as one GEMM over the channels-last pixels (MKL's GEMM beat oneDNN's
    1x1 convolution by 25-40 % on these shapes here); GELU runs in place."""
    n, _, h, w = x.shape
    if s.pointwise and padding == (0, 0):
        c_out = s.weight.shape[0]
        wt = s.weight.view(c_out, -1).t()
        if out is None:
            out = torch.empty(n, c_out, h, w, dtype=x.dtype, device=x.device,
                              memory_format=torch.channels_last)
        rows = _as_rows(out)
        if s.bias is None:
            torch.mm(_as_rows(x), wt, out=rows)
        else:
            torch.addmm(s.bias, _as_rows(x), wt, out=rows)
        if s.gelu:
            _gelu_(rows, s.gelu)
        return out
    y = F.conv2d(x, s.weight, s.bias, s.stride, padding, 1, s.groups)
    if s.gelu:
        y = _gelu_(y, s.gelu)
    return y if out is None else out.copy_(y)


def _buffer(work: dict[int, torch.Tensor], k: int, x: torch.Tensor, s: ConvStep
            ) -> torch.Tensor:
    """A channels-last (N, C_out, H, W) view for pointwise step k's output on x, in one buffer
    per step that every strip reuses (a fresh one per strip costs its page faults again)."""
    n, _, h, w = x.shape
    c = s.weight.shape[0]
    buf = work.get(k)
    if buf is None or buf.numel() < n * h * w * c:
        buf = work[k] = torch.empty(n * h * w * c, dtype=x.dtype, device=x.device)
    return buf[:n * h * w * c].view(n, h, w, c).permute(0, 3, 1, 2)


def _plan(steps: list[ConvStep], heights: list[int], o0: int, o1: int):
    """Rows each step reads for output rows [o0, o1) of the last step: per step, the input
    rows (clipped to the input) and the zero rows to pad above and below them."""
    plan = []
    lo, hi = o0, o1
    for s, h_in in zip(reversed(steps), reversed(heights[:-1]), strict=True):
        a, b = lo * s.stride - s.padding, (hi - 1) * s.stride - s.padding + s.kernel
        lo, hi = max(0, a), min(h_in, b)
        plan.append((lo, hi, lo - a, b - hi))
    return plan[::-1]


def run_strips(
    x: torch.Tensor,
    steps: list[ConvStep],
    residual: torch.Tensor | None = None,
    final_gelu: str | None = None,
    strip_bytes: int = STRIP_BYTES,
) -> torch.Tensor:
    """The chain `steps` over x (N, C, H, W), evaluated in strips of output rows; returns the
    full output as a channels-last tensor. With `residual` (the output's shape), the last
    convolution's output gets it added and then GELU (`final_gelu` approximation) applied, as in
    TinyViT's MBConv. Each strip recomputes the few rows its neighbours' convolutions share."""
    n, _, h, w = x.shape
    heights, widths = [h], [w]
    for s in steps:
        heights.append(s.out_len(heights[-1]))
        widths.append(s.out_len(widths[-1]))
    c_out = steps[-1].weight.shape[0]
    out = torch.empty(n, c_out, heights[-1], widths[-1], dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last)
    # Bytes per output row: each step's output rows per final row (strides after it) x width.
    per_row, scale = 0, 1
    for i in range(len(steps) - 1, -1, -1):
        per_row = max(per_row, steps[i].weight.shape[0] * widths[i + 1] * scale)
        scale *= steps[i].stride
    step_rows = max(1, min(heights[-1], strip_bytes // (per_row * x.element_size())))
    x = x.contiguous(memory_format=torch.channels_last)
    work: dict[int, torch.Tensor] = {}
    for item in range(n):
        xi = x[item:item + 1]
        for o0 in range(0, heights[-1], step_rows):
            o1 = min(heights[-1], o0 + step_rows)
            plan = _plan(steps, heights, o0, o1)
            t = xi[:, :, plan[0][0]:plan[0][1]]
            dst = out[item:item + 1, :, o0:o1]  # contiguous rows of the channels-last output
            for k, (s, (_, _, top, bottom)) in enumerate(zip(steps, plan, strict=True)):
                if top or bottom:  # the image border: the convolution's zero padding
                    t = F.pad(t, (0, 0, top, bottom))
                if k == len(steps) - 1:
                    t = conv(t, s, (0, s.padding), out=dst)
                elif s.pointwise:  # into this step's buffer, reused by every strip
                    t = conv(t, s, (0, s.padding), out=_buffer(work, k, t, s))
                else:
                    t = conv(t, s, (0, s.padding))
            if residual is not None:
                strip = _as_rows(dst)
                strip.add_(_as_rows(residual[item:item + 1, :, o0:o1]))
                if final_gelu:
                    _gelu_(strip, final_gelu)
    return out


def mlp_residual(x: torch.Tensor, norm: nn.Module, fc1: nn.Linear, act: nn.Module,
                 fc2: nn.Linear, chunk_bytes: int = MLP_CHUNK_BYTES) -> torch.Tensor:
    """x + fc2(act(fc1(norm(x)))) over token chunks, so the hidden activations (4x the tokens'
    width) never exist whole: TinyViT's Mlp (its own norm; dropout off) and the ViT blocks'
    norm2 + MLPBlock."""
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    out = torch.empty_like(flat)
    step = max(1, chunk_bytes // (fc1.out_features * x.element_size()))
    for t0 in range(0, flat.shape[0], step):
        xc = flat[t0:t0 + step]
        torch.add(xc, fc2(act(fc1(norm(xc)))), out=out[t0:t0 + step])
    return out.view(x.shape)

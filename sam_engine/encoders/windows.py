"""Window partition / merge for windowed attention, each in one pass over the data.

Meta's `window_partition` pads the whole (B, H, W, C) map (one copy) and then permutes it into
windows (a second copy); `window_unpartition` permutes back and crops (two more). Here the
windows tensor is allocated once and the valid region is copied straight into it through
strided views, one block of whole windows and one of partial windows per axis, so the padded
map never exists; the padding is written with a fill value (Meta pads *before* the qkv
projection, so padded tokens project to the qkv bias: callers pass that bias as `fill`).
"""

from __future__ import annotations

import torch


def _spans(n: int, ws: int) -> list[tuple[slice, int, int, int]]:
    """Per axis: (window slice, tokens per window used, source start, source stop)."""
    full, rest = divmod(n, ws)
    spans = []
    if full:
        spans.append((slice(0, full), ws, 0, full * ws))
    if rest:
        spans.append((slice(full, full + 1), rest, full * ws, n))
    return spans


def partition(x: torch.Tensor, ws: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """(B, H, W, *tail) -> (B * nH * nW, ws, ws, *tail) windows, row-major over the grid,
    padded at the bottom/right with `fill` (a scalar or a tensor broadcast over *tail)."""
    b, h, w = x.shape[:3]
    tail = x.shape[3:]
    nh, nw = -(-h // ws), -(-w // ws)
    out = x.new_empty(b, nh, nw, ws, ws, *tail)
    grid = out.permute(0, 1, 3, 2, 4, *range(5, out.dim()))  # (B, nH, ws, nW, ws, *tail)
    for rw, ra, r0, r1 in _spans(h, ws):
        for cw, ca, c0, c1 in _spans(w, ws):
            src = x[:, r0:r1, c0:c1].unflatten(1, (-1, ra)).unflatten(3, (-1, ca))
            grid[:, rw, :ra, cw, :ca] = src
    if h % ws:
        grid[:, nh - 1, h % ws:] = fill
    if w % ws:
        grid[:, :, :, nw - 1, w % ws:] = fill
    return out.view(b * nh * nw, ws, ws, *tail)


def merge(windows: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `partition`: (B * nH * nW, ws, ws, *tail) -> contiguous (B, H, W, *tail),
    the padding dropped. `windows` may be any strided view (e.g. an attention output)."""
    tail = windows.shape[3:]
    nh, nw = -(-h // ws), -(-w // ws)
    grid = windows.view(b, nh, nw, ws, ws, *tail) if windows.is_contiguous() else (
        windows.unflatten(0, (b, nh, nw)))
    grid = grid.permute(0, 1, 3, 2, 4, *range(5, grid.dim()))  # (B, nH, ws, nW, ws, *tail)
    out = windows.new_empty(b, h, w, *tail)
    for rw, ra, r0, r1 in _spans(h, ws):
        for cw, ca, c0, c1 in _spans(w, ws):
            dst = out[:, r0:r1, c0:c1].unflatten(1, (-1, ra)).unflatten(3, (-1, ca))
            dst.copy_(grid[:, rw, :ra, cw, :ca])
    return out

"""The stored form of a quantizer's output: scales as fp16 holds them, and
round-to-nearest against those scales (the rtn method, and the cheap
reference Q(W) of the TACQ score). The clipping search itself is the op
tacq.quantize (docs/method.md, The quantizer)."""

from __future__ import annotations

import torch

from . import ops

# positive range of a stored fp16 scale: the smallest subnormal to the largest finite value
SCALE_MIN, SCALE_MAX = 2.0**-24, float(torch.finfo(torch.float16).max)


def storable_scale(scale: torch.Tensor) -> torch.Tensor:
    """fp32 scales as they will be stored: clamped into fp16's positive range
    (a row of tiny or huge weights would otherwise round to a scale of 0 or
    inf, and quantizing by it to NaN) and rounded to fp16."""
    return scale.float().clamp(SCALE_MIN, SCALE_MAX).half().float()


def rtn_quantize(W: torch.Tensor, bits: int, group_size: int):
    """Round-to-nearest of W against its scales as stored (clamped into
    fp16's range and rounded to fp16): the codes are recomputed with those
    scales, so dequantizing what is stored gives back exactly what was
    chosen, also for rows whose fp32 scale fp16 cannot hold.
    -> (uint8 codes [N, K], fp32 scale [N, G], fp32 zero [N, G])."""
    W = W.detach().float().contiguous()
    _, scale, zero = ops.quantize(W, bits, group_size)
    scale = storable_scale(scale)
    return round_to_grid(W, scale, zero, bits), scale, zero


def round_to_grid(W: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes [N, K] of W rounded to nearest on the grid of the given
    fp32 scale and zero [N, G] (groups of K / G contiguous columns)."""
    W = W.detach().float().contiguous()
    groups = W.view(W.shape[0], scale.shape[1], -1)  # [N, G, group length]
    codes = torch.round(groups / scale[..., None]) + zero[..., None]
    return codes.clamp_(0, 2**bits - 1).to(torch.uint8).view_as(W)


def rtn_dequantized(W: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """dequantize(rtn_quantize(W)): the weight round-to-nearest stores, fp32 [N, K]."""
    codes, scale, zero = rtn_quantize(W, bits, group_size)
    return ops.dequantize(ops.pack(codes, bits), scale, zero, bits, group_size, W.shape[1])

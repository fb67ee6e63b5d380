"""CPU benchmarks of quantize and saliency_accumulate (docs/benchmarks.md).

quantize: clipping search, 2-bit per-row, 4096x14336, against the pure-torch
reference (timed on a few rows and scaled to the matrix: it is too slow to run
whole). saliency_accumulate: B=8, T=256, N=K=4096 (the issue's shape) and
B=64, T=16 (short samples, swept over acc in groups), fp32 and bf16 inputs,
against one torch.mm producing the batch-summed gradient of the same shapes and
dtype (same FLOPs) and the naive per-sample loop (mm per sample, abs, add into
fp32 acc).
"""

from __future__ import annotations

import torch

from common import Row, time_cpu
from tacq_ext import ops, reference


def _quantize_row(N: int, K: int, bits: int) -> Row:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=gen)
    ours = time_cpu(lambda: ops.quantize(w, bits, -1), reps=3, warmup=1)
    sample_rows = 4
    ref = time_cpu(lambda: reference.quantize(w[:sample_rows], bits, -1), reps=3, warmup=1) * N / sample_rows
    return Row("quantize", f"{N}x{K}", bits, None, ours, {"torch reference (scaled)": ref}, w.numel() * 4,
               note=f"80-step clipping search; reference timed on {sample_rows} rows")


def _saliency_row(B: int, T: int, N: int, K: int, dtype: torch.dtype) -> Row:
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(B, T, N, generator=gen).to(dtype)
    act = torch.randn(B, T, K, generator=gen).to(dtype)
    acc = torch.zeros(N, K)
    ours = time_cpu(lambda: ops.saliency_accumulate(acc, grad, act), reps=5, warmup=1)
    mm = time_cpu(lambda: grad.reshape(-1, N).T @ act.reshape(-1, K), reps=5, warmup=1)

    def naive():
        for b in range(B):
            acc.add_((grad[b].T @ act[b]).abs())

    loop = time_cpu(naive, reps=3, warmup=1)
    flops_note = f"{str(dtype).removeprefix('torch.')} inputs; {2 * B * T * N * K / ours / 1e9:.0f} GFLOP/s"
    return Row("saliency_accumulate", f"B{B} T{T} {N}x{K}", None, B, ours,
               {"torch.mm batch-summed": mm, "per-sample loop": loop}, None, note=flops_note)


def rows(device: str, quick: bool) -> list[Row]:
    assert device == "cpu"
    if quick:
        quantize_shape, saliency_shapes = (256, 1024), [(2, 64, 512, 512)]
    else:
        quantize_shape, saliency_shapes = (4096, 14336), [(8, 256, 4096, 4096), (64, 16, 4096, 4096)]
    return [_quantize_row(*quantize_shape, 2)] + [_saliency_row(*shape, dtype) for shape in saliency_shapes
                                                  for dtype in (torch.float32, torch.bfloat16)]

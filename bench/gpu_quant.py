"""GPU benchmarks of saliency_accumulate and quantize (docs/benchmarks.md).

saliency_accumulate, bf16, B = 8 samples of T = 512 tokens, Llama-3-8B shapes,
against two baselines measured in the same run:
  * "cublas_mm_batch_summed": torch.mm of the batch-summed gradient
    grad_out.reshape(B*T, N)^T @ act.reshape(B*T, K) -- the same FLOPs without
    the per-sample |.|, i.e. what cuBLAS reaches on this contraction; the
    speedup over it is our fraction of cuBLAS TFLOP/s (goal >= 0.5);
  * "bmm_abs_sum": torch.bmm per-sample gradients [B, N, K] + abs + sum over B
    (goal: >= 3x slower than ours).
The operands (<= 120 MB) are reused across calls: both kernels are compute
bound, and cuBLAS sees the same cache state as we do.

quantize, 2-bit, whole-row groups, clipping search, a 14336 x 4096 fp32
matrix, against reference.py's per-group search run on the same GPU for a few
rows and extrapolated linearly to all rows (each row costs the same: 80 steps
of a few small kernels; goal >= 20x).
"""

from __future__ import annotations

import time

import torch

from common import Row, time_cuda
from tacq_ext import ops, reference

SALIENCY_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]  # (N out, K in)
SALIENCY_B, SALIENCY_T = 8, 512
QUICK_SALIENCY = [(1024, 1024)]
QUICK_B, QUICK_T = 2, 128

QUANT_SHAPE = (14336, 4096)
QUICK_QUANT_SHAPE = (512, 1024)
REFERENCE_ROWS = 4


def _saliency_row(N: int, K: int, B: int, T: int, device: str) -> Row:
    gen = torch.Generator(device=device).manual_seed(0)
    grad = torch.randn(B, T, N, device=device, generator=gen, dtype=torch.bfloat16)
    act = torch.randn(B, T, K, device=device, generator=gen, dtype=torch.bfloat16)
    acc = torch.zeros(N, K, device=device)

    ours = time_cuda(lambda: ops.saliency_accumulate(acc, grad, act), reps=20, warmup=3)
    g2, a2 = grad.reshape(B * T, N), act.reshape(B * T, K)
    mm = time_cuda(lambda: torch.mm(g2.T, a2), reps=20, warmup=3)
    gT = grad.transpose(1, 2)

    def bmm_abs_sum():
        acc.add_(torch.bmm(gT, act).abs().sum(0, dtype=torch.float32))

    bmm = time_cuda(bmm_abs_sum, reps=10, warmup=2)
    flops = 2 * B * T * N * K
    return Row(
        op="saliency_accumulate",
        shape=f"{N}x{K} bf16 T={T}",
        bits=None,
        batch=B,
        ours_s=ours,
        baselines_s={"cublas_mm_batch_summed": mm, "bmm_abs_sum": bmm},
        bytes_moved=B * T * (N + K) * 2 + N * K * 8,
        note=f"{flops / ours / 1e12:.0f} TFLOP/s vs cuBLAS {flops / mm / 1e12:.0f}",
    )


def _reference_seconds(w: torch.Tensor, rows: int, bits: int) -> float:
    """reference.py's group search on the GPU for `rows` rows, scaled to all of w."""
    keep = torch.zeros(w.shape[1], dtype=torch.bool, device=w.device)
    reference._quantize_group(w[0], keep, bits)  # warm-up (kernel caches)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for n in range(rows):
        reference._quantize_group(w[n], keep, bits)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / rows * w.shape[0]


def _quantize_row(N: int, K: int, device: str) -> Row:
    gen = torch.Generator(device=device).manual_seed(1)
    w = torch.randn(N, K, device=device, generator=gen) * 0.02
    bits = 2
    ours = time_cuda(lambda: ops.quantize(w, bits, -1), reps=5, warmup=1)
    ref = _reference_seconds(w, REFERENCE_ROWS, bits)
    return Row(
        op="quantize",
        shape=f"{N}x{K} fp32 per-row",
        bits=bits,
        batch=None,
        ours_s=ours,
        baselines_s={f"reference_gpu_x{N // REFERENCE_ROWS}": ref},
        bytes_moved=N * K * 5 + N * 8,
        note=f"reference timed on {REFERENCE_ROWS} rows, extrapolated",
    )


def rows(device: str, quick: bool) -> list[Row]:
    if not device.startswith("cuda"):
        return []
    B, T = (QUICK_B, QUICK_T) if quick else (SALIENCY_B, SALIENCY_T)
    out = [_saliency_row(N, K, B, T, device) for N, K in (QUICK_SALIENCY if quick else SALIENCY_SHAPES)]
    out.append(_quantize_row(*(QUICK_QUANT_SHAPE if quick else QUANT_SHAPE), device))
    return out

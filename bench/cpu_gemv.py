"""CPU benchmarks of mixed_gemv and dequantize (docs/benchmarks.md).

mixed_gemv (per-row scales, and at batch 1 also groups of 64 as in
bench/e2e_decode.py's checkpoints; 0.35 % fp16 residual), with fp32 and with bf16
activations, and with bf16 activations rounded to int8 (x_int8), against, in the same run: torch fp32 and bf16 F.linear, and
torch's int4 weight-only CPU kernel (_weight_int4pack_mm_for_cpu, group 128,
bf16 activations, so the bf16 rows are the like-for-like comparison with it).
Every operand set is cycled over four times the last-level cache so each call
streams its weights from DRAM, and every mixed_gemv, F.linear and int4 time is
the median over three fresh allocations of that stack (time_streamed_cpu).
bytes_moved = what our kernel must read: packed codes, fp16 scale/zero, the
CSR residual and x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import Cycler, Row, time_cpu, time_streamed_cpu
from tacq_ext import ops

RATIO = 0.0035
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]  # (N out, K in), Llama-3-8B
QUICK_SHAPES = [(2048, 2048)]


def _residual(N: int, K: int, gen: torch.Generator):
    """0.35 % of positions, spread evenly over rows, sorted within each row."""
    per_row = max(1, round(RATIO * K))
    cols = torch.rand(N, K, generator=gen).argsort(dim=1)[:, :per_row].sort(dim=1).values
    row_ptr = torch.arange(0, N * per_row + 1, per_row, dtype=torch.int32)
    values = torch.randn(N * per_row, generator=gen).half()
    return row_ptr, cols.reshape(-1).to(torch.int32), values


def _ours(N, K, bits, M, x_dtype, gen, x_int8=False, group_size=-1):
    """(make_run, bytes_moved): make_run() stacks fresh copies of one random
    layer and returns the timed call."""
    G = 1 if group_size == -1 else K // group_size
    packed = ops.pack(torch.randint(0, 2**bits, (N, K), generator=gen, dtype=torch.int64).to(torch.uint8), bits)
    scale = (torch.rand(N, G, generator=gen) * 0.01).half()
    zero = torch.full((N, G), float(2 ** (bits - 1)), dtype=torch.float16)
    row_ptr, col_idx, values = _residual(N, K, gen)
    x = torch.randn(M, K, generator=gen).to(x_dtype)
    per_copy = packed.numel() * 4 + scale.numel() * 4 + col_idx.numel() * 6 + row_ptr.numel() * 4

    def make_run():
        cycler = Cycler(lambda i: (packed.clone(), scale.clone(), zero.clone(), row_ptr.clone(),
                                   col_idx.clone(), values.clone()), per_copy, "cpu")

        def run():
            p, s, z, rp, ci, v = cycler.next()
            ops.mixed_gemv(x, p, s, z, bits, group_size, rp, ci, v, x_int8)

        return run

    return make_run, per_copy + x.numel() * x.element_size()


def _linear(N, K, M, dtype, gen):
    """make_run for torch F.linear in `dtype`."""
    w = torch.randn(N, K, generator=gen).to(dtype)
    x = torch.randn(M, K, generator=gen).to(dtype)

    def make_run():
        cycler = Cycler(lambda i: (w.clone(),), w.numel() * w.element_size(), "cpu")
        return lambda: F.linear(x, cycler.next()[0])

    return make_run


def _int4(N, K, M, gen):
    """make_run for torch's int4 weight-only CPU kernel (group 128, bf16)."""
    w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        torch.randint(0, 16, (N, K), generator=gen, dtype=torch.int32), 1)
    sz = torch.rand(K // 128, N, 2, generator=gen).bfloat16()
    x = torch.randn(M, K, generator=gen).bfloat16()

    def make_run():
        cycler = Cycler(lambda i: (w.clone(), sz.clone()), w.numel() + sz.numel() * 2, "cpu")

        def run():
            wi, s = cycler.next()
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, wi, 128, s)

        return run

    return make_run


def rows(device: str, quick: bool) -> list[Row]:
    assert device == "cpu"
    gen = torch.Generator().manual_seed(0)
    out = []
    grid = [(2, 1), (2, 4), (2, 16), (3, 1), (3, 16), (4, 1), (4, 16)]
    if quick:
        grid = [(2, 1), (3, 4)]
    for N, K in QUICK_SHAPES if quick else SHAPES:
        baselines = {}
        for M in sorted({m for _, m in grid}):
            baselines[M] = {
                "fp32 linear": time_streamed_cpu(_linear(N, K, M, torch.float32, gen), reps=10),
                "bf16 linear": time_streamed_cpu(_linear(N, K, M, torch.bfloat16, gen), reps=10),
                "int4 torch": time_streamed_cpu(_int4(N, K, M, gen), reps=20),
            }
        for bits, M in grid:
            for x_dtype, x_int8 in ((torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)):
                make_run, nbytes = _ours(N, K, bits, M, x_dtype, gen, x_int8)
                x_name = str(x_dtype)[6:] + (" rounded to int8 (x_int8)" if x_int8 else "")
                out.append(Row("mixed_gemv", f"{N}x{K}", bits, M, time_streamed_cpu(make_run, reps=30), baselines[M],
                               nbytes, note=f"x {x_name}; per-row, 0.35% fp16 residual"))
            if M == 1:  # the group size of bench/e2e_decode.py's checkpoints
                make_run, nbytes = _ours(N, K, bits, M, torch.bfloat16, gen, group_size=64)
                out.append(Row("mixed_gemv", f"{N}x{K}", bits, M, time_streamed_cpu(make_run, reps=30), baselines[M],
                               nbytes, note="x bfloat16; groups of 64, 0.35% fp16 residual"))
        out.append(_dequantize_row(N, K, gen))
    return out


def _dequantize_row(N, K, gen) -> Row:
    """2-bit, group 128, to fp32: bytes = codes read + fp32 written."""
    bits = 2
    packed = ops.pack(torch.randint(0, 4, (N, K), generator=gen, dtype=torch.int64).to(torch.uint8), bits)
    scale = torch.rand(N, K // 128, generator=gen).half()
    zero = torch.full_like(scale, 1.0)
    cycler = Cycler(lambda i: (packed.clone(),), packed.numel() * 4, "cpu")
    t = time_cpu(lambda: ops.dequantize(cycler.next()[0], scale, zero, bits, 128, K), reps=10)
    copy_src = torch.randn(N, K, generator=gen)
    t_copy = time_cpu(lambda: copy_src.clone(), reps=10)
    return Row("dequantize", f"{N}x{K}", bits, None, t, {"fp32 clone": t_copy},
               packed.numel() * 4 + N * K * 4, note="group 128 -> fp32 (bytes read + written)")

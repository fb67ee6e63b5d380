"""GPU inference kernels: tacq.mixed_gemv against torch fp16 and bf16
``F.linear`` on the shapes of docs/benchmarks.md, and tacq.dequantize against a copy of
the same output size.

mixed_gemv: per-row fp16 scales, 0.35 % residual entries, x fp16, batch 1/4/16,
bits 2/3/4; every call takes the next of several distinct weight copies totalling
more than 256 MB (Cycler), and so does the baseline. bytes_moved = bytes the kernel
must read (packed codes, scales, zeros, CSR, x) plus y.
dequantize: 28672x8192 2-bit to fp16; bytes_moved = read + written, so "% bw"
is against the device-to-device copy bandwidth that bench/run.py measures.

    python bench/run.py --device cuda --only gpu_gemv [--quick]
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from common import Cycler, Row, timer_for
from tacq_ext import ops

SHAPES = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336),
          (8192, 8192), (28672, 8192), (8192, 28672)]  # (N, K) = (out, in)
BATCHES = [1, 4, 16]
BITS = [2, 3, 4]
RESIDUAL = 0.0035
DEQUANT_SHAPE = (28672, 8192)


def random_layer(N: int, K: int, bits: int, device: str, seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """(packed, scale, zero, row_ptr, col_idx, values) with ~RESIDUAL·N·K sorted CSR entries."""
    g = torch.Generator(device=device).manual_seed(seed)
    codes = torch.randint(0, 2**bits, (N, K), generator=g, device=device, dtype=torch.uint8)
    packed = ops.pack(codes, bits)
    del codes
    scale = (torch.rand(N, 1, generator=g, device=device) * 0.02 + 0.005).half()
    zero = torch.full((N, 1), float(2 ** (bits - 1)), device=device).half()
    flat = torch.randint(0, N * K, (int(RESIDUAL * N * K),), generator=g, device=device).unique()
    rows, cols = flat // K, flat % K
    row_ptr = torch.zeros(N + 1, dtype=torch.int32, device=device)
    row_ptr[1:] = torch.bincount(rows, minlength=N).cumsum(0).to(torch.int32)
    values = (torch.randn(flat.numel(), generator=g, device=device) * 0.05).half()
    return packed, scale, zero, row_ptr, cols.to(torch.int32), values


def layer_bytes(layer: Tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in layer)


def gemv_rows(device: str, shape: Tuple[int, int], batches: List[int], bits_list: List[int]) -> List[Row]:
    timer = timer_for(device)
    N, K = shape
    rows = []
    baselines = {}
    for batch in batches:
        x16 = torch.randn(batch, K, device=device).half()
        x_bf = x16.bfloat16()
        times = {}
        for name, dtype, x in (("torch fp16 F.linear", torch.float16, x16),
                               ("torch bf16 F.linear", torch.bfloat16, x_bf)):
            weights = baselines.get(dtype)
            if weights is None:
                weights = baselines[dtype] = Cycler(
                    lambda i, dt=dtype: (torch.randn(N, K, device=device, dtype=dt),), N * K * 2, device)
            times[name] = timer(lambda w=weights, x=x: F.linear(x, *w.next()))
        for bits in bits_list:
            base = random_layer(N, K, bits, device)
            cycler = Cycler(lambda i, b=base: tuple(t.clone() for t in b), layer_bytes(base), device)

            def call(cycler=cycler, bits=bits, x=x16):
                packed, scale, zero, row_ptr, col_idx, values = cycler.next()
                return ops.mixed_gemv(x, packed, scale, zero, bits, -1, row_ptr, col_idx, values)

            t = timer(call)
            moved = layer_bytes(base) + 2 * batch * K + 2 * batch * N  # + x read, y written
            rows.append(Row("mixed_gemv", f"{N}x{K}", bits, batch, t, dict(times), moved,
                            f"fp16 x, per-row scales, {base[4].numel() / (N * K):.2%} residual"))
            del cycler, base
    return rows


def dequantize_row(device: str, shape: Tuple[int, int]) -> Row:
    timer = timer_for(device)
    N, K = shape
    base = random_layer(N, K, 2, device)[:3]
    cycler = Cycler(lambda i: tuple(t.clone() for t in base), layer_bytes(base), device)
    out = torch.empty(N, K, dtype=torch.float16, device=device)
    src = torch.empty_like(out)
    t = timer(lambda: ops.dequantize(*cycler.next(), 2, -1, K, torch.float16))
    t_copy = timer(lambda: out.copy_(src))
    moved = layer_bytes(base) + N * K * 2
    return Row("dequantize", f"{N}x{K}", 2, None, t, {"copy of the fp16 output": t_copy}, moved,
               "to fp16, per-row scales; bytes = read + written")


def rows(device: str, quick: bool) -> List[Row]:
    if not device.startswith("cuda"):
        return []
    if quick:
        return gemv_rows(device, (4096, 4096), [1], [2]) + [dequantize_row(device, (4096, 4096))]
    out = []
    for shape in SHAPES:
        out += gemv_rows(device, shape, BATCHES, BITS)
    out.append(dequantize_row(device, DEQUANT_SHAPE))
    return out

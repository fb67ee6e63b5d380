"""Quantize one random Llama-sized linear layer with the tacq ops and compare it
with fp32: reconstruction error per bit width and batch-1 GEMV time.

    python examples/quantize_random_layer.py [--n 4096] [--k 4096]
"""

import argparse
import time

import torch

from tacq_ext import ops


def median_seconds(fn, reps=30):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def empty_residual(N, device):
    return (torch.zeros(N + 1, dtype=torch.int32, device=device),
            torch.zeros(0, dtype=torch.int32, device=device),
            torch.zeros(0, dtype=torch.float16, device=device))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--group-size", type=int, default=-1)
    args = parser.parse_args()
    torch.manual_seed(0)
    W = torch.randn(args.n, args.k) / args.k**0.5
    x = torch.randn(1, args.k)
    fp32_s = median_seconds(lambda: torch.nn.functional.linear(x, W))
    print(f"layer {args.n}x{args.k}, group_size {args.group_size}; fp32 F.linear: {fp32_s * 1e3:.3f} ms")
    print(f"{'bits':>4} {'rel. weight err':>16} {'rel. output err':>16} {'gemv ms':>8} {'speedup':>8}")
    for bits in (2, 3, 4):
        codes, scale, zero = ops.quantize(W, bits, args.group_size)
        packed = ops.pack(codes, bits)
        W_hat = ops.dequantize(packed, scale, zero, bits, args.group_size, args.k)
        csr = empty_residual(args.n, W.device)
        gemv = lambda: ops.mixed_gemv(x, packed, scale, zero, bits, args.group_size, *csr)  # noqa: E731
        y, y_ref = gemv(), x @ W.T
        w_err = ((W_hat - W).norm() / W.norm()).item()
        y_err = ((y - y_ref).norm() / y_ref.norm()).item()
        t = median_seconds(gemv)
        print(f"{bits:>4} {w_err:>16.4f} {y_err:>16.4f} {t * 1e3:>8.3f} {fp32_s / t:>7.1f}x")


if __name__ == "__main__":
    main()

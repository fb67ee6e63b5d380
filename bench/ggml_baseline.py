"""tacq.mixed_gemv against llama.cpp's CPU kernels (ggml's q2_K, q3_K, q4_K
MUL_MAT), in the same run, at Llama-3-8B's down projection: 4096 outputs,
K = 14336, batch 1, fp32 activations (ggml quantizes them to q8_K itself).

ggml's numbers come from its own `test-backend-ops perf`; build it once:

    git clone https://github.com/ggml-org/ggml && cd ggml
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON && cmake --build build --target test-backend-ops
    python bench/ggml_baseline.py --test-backend-ops ggml/build/bin/test-backend-ops

test-backend-ops times the same weights over and over, so ours is timed the
same way here (one weight set, median of repeated calls), with the number of
threads ggml uses (all of the machine's). Both run in --rounds interleaved
rounds and each figure is its fastest round. Ours: 2, 3 and 4 bits with the
matching k-quant, per-row scales and groups of 64, a 0.35 % fp16 residual,
fp32 and bf16 x, and fp32 x rounded to int8 per 32 values (x_int8, what ggml
does to fp32 activations with q8_K). Writes
bench/results/ggml-baseline-cpu.{md,json,png}.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, time_cpu, write_table_results  # noqa: E402

N, K = 4096, 14336
K_QUANTS = {2: "q2_K", 3: "q3_K", 4: "q4_K"}


def ggml_microseconds(binary: str, k_quant: str) -> float:
    """test-backend-ops' us/run of MUL_MAT(type_a=k_quant, type_b=f32, m=N, n=1, k=K) on the CPU backend."""
    params = f"type_a={k_quant},type_b=f32,m={N},n=1,k={K},"
    out = subprocess.run([binary, "perf", "-o", "MUL_MAT", "-b", "CPU", "-p", re.escape(params)],
                         capture_output=True, text=True, check=True).stdout
    times = [float(m.group(1)) for line in out.splitlines() if params in line
             for m in [re.search(r"([0-9.]+) us/run", line)] if m]
    if len(times) != 1:
        raise SystemExit(f"expected one MUL_MAT {params} result from {binary}, got:\n{out[-2000:]}")
    return times[0]


def our_layer(bits: int, group_size: int):
    from e2e_decode import random_quantized_linear

    return random_quantized_linear(N, K, bits, torch.Generator().manual_seed(bits), group_size)


def ours_microseconds(layer, x: torch.Tensor) -> float:
    with torch.no_grad():
        return time_cpu(lambda: layer(x), reps=200, warmup=20) * 1e6


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['bits']}-bit {r['ours']}" for r in rows]
    ax.bar(range(len(rows)), [r["ggml_us"] / r["ours_us"] for r in rows])
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("speed-up over the ggml k-quant")
    ax.set_title(f"mixed_gemv vs ggml MUL_MAT, {N}x{K}, batch 1 (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-backend-ops", required=True, help="path of ggml's test-backend-ops binary")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over every case; each figure is its fastest round (default 3)")
    parser.add_argument("--name", default="ggml-baseline-cpu", help="results file stem")
    args = parser.parse_args(argv)
    import tacq_ext  # noqa: F401  (registers the ops)

    threads = os.cpu_count() or 1  # test-backend-ops runs the CPU backend on every hardware thread
    torch.set_num_threads(threads)
    from tqdm.auto import tqdm

    x = torch.randn(1, K, generator=torch.Generator().manual_seed(0))
    x_kinds = {"fp32 x": (torch.float32, False), "bf16 x": (torch.bfloat16, False),
               "fp32 x as int8": (torch.float32, True)}
    cases = []
    for bits, k_quant in K_QUANTS.items():
        for group_size in (-1, 64):
            for x_kind, (x_dtype, x_int8) in x_kinds.items():
                layer = our_layer(bits, group_size)
                layer.x_int8 = x_int8
                cases.append((bits, k_quant, group_size, x_kind, x_dtype, layer))
    ggml_us = {k_quant: float("inf") for k_quant in K_QUANTS.values()}
    ours_us = [float("inf")] * len(cases)
    for _ in tqdm(range(args.rounds), desc="rounds"):  # the shared machine drifts: interleave, keep the best
        for k_quant in ggml_us:
            ggml_us[k_quant] = min(ggml_us[k_quant], ggml_microseconds(args.test_backend_ops, k_quant))
        for i, (_, _, _, _, x_dtype, layer) in enumerate(cases):
            ours_us[i] = min(ours_us[i], ours_microseconds(layer, x.to(x_dtype)))
    rows = [{"bits": bits, "k_quant": k_quant, "ggml_us": ggml_us[k_quant], "ours_us": ours_us[i],
             "ours": ("per row" if group_size == -1 else "groups of 64") + f", {x_kind}"}
            for i, (bits, k_quant, group_size, x_kind, _, _) in enumerate(cases)]
    lines = ["| bits | ggml | ggml µs | ours | ours µs | ours vs ggml |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['bits']} | {r['k_quant']} | {r['ggml_us']:.1f} | {r['ours']} | {r['ours_us']:.1f} "
              f"| {r['ggml_us'] / r['ours_us']:.2f}x |" for r in rows]
    table = "\n".join(lines)
    print(table)
    notes = [f"shape: {N} outputs x K = {K}, batch 1; {threads} threads for both; fastest of {args.rounds} "
             "interleaved rounds (ours: median of 200 calls per round)",
             f"ggml: {args.test_backend_ops}"]
    stem = write_table_results(args.name, command_line("ggml_baseline.py", argv), table, notes, {"rows": rows})
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

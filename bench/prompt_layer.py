"""One layer of a prompt or a batch of more than 16 rows on the CPU: tacq.mixed_gemv
as it routes the rows (the fused kernel 16 rows a call up to
ops.cpu_fused_rows_limit rows, else a GEMM over blocks of the dense weight),
each route forced (TACQ_CPU_FUSED_ROWS), and F.linear with the whole dense
weight in x's dtype (what the unquantized model runs), at Llama-3-8B MLP
shapes, 2, 3 and 4 bits, groups of 64 and per-row scales, bf16 and fp32 x (--dtypes). The
contenders are timed in alternation, `--rounds` times, and each reports its
fastest round, so a slow spell of a shared machine hits all. The two forced
routes give the crossover that cpu_fused_rows_limit encodes for this machine.

    python bench/prompt_layer.py --threads 2                       # 512-row prompts
    python bench/prompt_layer.py --threads 2 --rows 17,24,32,48,64,96,128,256 --bits 2 \\
        --shapes 14336x4096,2048x2048 --rounds 3 --name short-prompts-cpu   # the crossover
    python bench/prompt_layer.py --threads 2 --rows 24,53,128 --bits 2,3 --dtypes float32 \\
        --shapes 64x192,192x192,512x192,192x512 --calls 300 --name dense-blocks-demo-cpu  # the demo's layers

Writes bench/results/<name>.{md,json} and, for several row counts, <name>.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, seconds_per_call, write_table_results  # noqa: E402
from e2e_decode import random_quantized_linear  # noqa: E402
from tacq_ext import ops  # noqa: E402

SHAPES = "14336x4096,4096x14336"  # (N x K): the 8B's gate/up and down projections
CONTENDERS = ("ours", "fused", "dense", "F.linear")


@contextmanager
def fused_rows(limit: int):
    """TACQ_CPU_FUSED_ROWS=limit inside the block: the op's route forced."""
    before = os.environ.get("TACQ_CPU_FUSED_ROWS")
    os.environ["TACQ_CPU_FUSED_ROWS"] = str(limit)
    try:
        yield
    finally:
        if before is None:
            del os.environ["TACQ_CPU_FUSED_ROWS"]
        else:
            os.environ["TACQ_CPU_FUSED_ROWS"] = before


def time_layer(layer, weight, x, rounds: int, calls: int) -> dict:
    """Fastest round of `calls` calls of each contender, seconds per call."""
    def routed(limit):
        def run():
            with fused_rows(limit):
                return layer(x)
        return run

    runs = {"ours": lambda: layer(x), "fused": routed(x.shape[0]), "dense": routed(ops.MIXED_GEMV_MAX_ROWS),
            "F.linear": lambda: torch.nn.functional.linear(x, weight)}
    best = dict.fromkeys(CONTENDERS, float("inf"))
    with torch.no_grad():
        for _ in range(rounds):
            for name, run in runs.items():
                best[name] = min(best[name], seconds_per_call(run, calls))
    return best


def plot_crossover(payload: list, path: Path) -> None:
    """Milliseconds per call against rows of x, one panel per layer setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["N"], r["K"], r["bits"], r["group_size"], r["x_dtype"]) for r in payload})
    columns = min(4, len(settings))
    grid_rows = -(-len(settings) // columns)
    fig, axes = plt.subplots(grid_rows, columns, figsize=(4.5 * columns, 3.6 * grid_rows), squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.set_visible(False)
    for ax, (N, K, bits, group_size, dtype) in zip(axes.flat, settings):
        points = sorted((r for r in payload if (r["N"], r["K"], r["bits"], r["group_size"], r["x_dtype"])
                         == (N, K, bits, group_size, dtype)), key=lambda r: r["rows"])
        for name, style in zip(CONTENDERS, ("o-", "^--", "s--", "x:")):
            ax.plot([r["rows"] for r in points], [r[name] * 1e3 for r in points], style, label=name)
        ax.set_title(f"{N}x{K}, {bits}-bit, g{group_size}, {dtype} x", fontsize=9)
        ax.set_xlabel("rows of x")
        ax.set_ylabel("ms per call")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110 if len(settings) <= 8 else 60)  # a many-panel grid stays under ~0.5 MB
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="512", help="comma-separated rows of x, each more than 16 (default 512)")
    parser.add_argument("--bits", default="2,3,4", help="comma-separated widths (default 2,3,4)")
    parser.add_argument("--shapes", default=SHAPES, help=f"comma-separated NxK (default {SHAPES})")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (default 5)")
    parser.add_argument("--calls", type=int, default=3,
                        help="calls a round (default 3; small layers want hundreds)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated x dtypes (default bfloat16,float32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--name", default="prompt-layer-cpu", help="results file stem")
    args = parser.parse_args(argv)
    row_counts = [int(v) for v in args.rows.split(",")]
    if min(row_counts) <= ops.MIXED_GEMV_MAX_ROWS:
        parser.error(f"--rows must each be more than {ops.MIXED_GEMV_MAX_ROWS} (up to "
                     f"{ops.MIXED_GEMV_MAX_ROWS} rows always run the fused kernel)")
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(0)
    jobs = [(N, K, bits, group_size, dtype) for N, K in shapes for bits in map(int, args.bits.split(","))
            for group_size in (64, -1) for dtype in (getattr(torch, name) for name in args.dtypes.split(","))]
    rows, payload = [], []
    for N, K, bits, group_size, dtype in tqdm(jobs, desc="layers"):
        layer = random_quantized_linear(N, K, bits, generator, group_size)
        weight = layer.dense_weight(dtype)
        dtype_name = str(dtype).removeprefix("torch.")
        scales = "per row" if group_size == -1 else f"groups of {group_size}"
        for M in row_counts:
            x = torch.randn(M, K, generator=generator).to(dtype)
            best = time_layer(layer, weight, x, args.rounds, args.calls)
            ms = " | ".join(f"{best[name] * 1e3:.3f}" for name in CONTENDERS)
            rows.append(f"| {N}x{K} | {bits} | {scales} | {dtype_name} | {M} | {ms} "
                        f"| {best['F.linear'] / best['ours']:.2f}x | {best['fused'] / best['dense']:.2f}x |")
            payload.append({"N": N, "K": K, "bits": bits, "group_size": group_size, "x_dtype": dtype_name,
                             "rows": M, **best})
    table = "\n".join(["| N x K | bits | scales | x | rows | ours ms | fused ms | dense ms | F.linear ms "
                       "| speed vs F.linear | fused / dense |",
                       "|---|---|---|---|---|---|---|---|---|---|---|"] + rows)
    print(table)
    notes = ["0.35 % kept weights; ours: the op's own route; fused / dense: each route forced with "
             "TACQ_CPU_FUSED_ROWS; F.linear on the dense weight in x's dtype",
             f"fastest of {args.rounds} alternating rounds of {args.calls} calls; {torch.get_num_threads()} threads"]
    stem = write_table_results(args.name, command_line("prompt_layer.py", argv), table, notes,
                               {"rows": row_counts, "seconds": payload})
    if len(row_counts) > 1:
        plot_crossover(payload, stem.with_suffix(".png"))
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

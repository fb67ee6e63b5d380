"""What one call costs besides its arithmetic, at batch 1 on the CPU, by the
route a compiled graph takes to it.

Inductor's default (Python) wrapper calls torch's own matrix products as
torch functions (its `extern_kernels.mm` is `torch.mm`: typed argument parsing,
one direct call) and every custom op, ours included, through `torch.ops`
(argument parsing against the schema into a boxed stack, then the
dispatcher). Its C++ wrapper calls both from generated C++. Timed here,
alternating, each keeping its fastest of --rounds rounds, fp32 x [1, K]:

- `torch.mm`: x @ w, w an nn.Linear weight seen as [K, N], into a preallocated
  output, as the compiled fp32 graph calls it;
- `torch.ops.aten.mm`: the same product through `torch.ops`, the route a custom op
  always takes from Python;
- `tacq mixed_gemv_stored`: the stored-layer op on a 2-bit layer (whole rows,
  0.35 % residual), its sizes passed as five Python ints and bools;
- `tacq mixed_gemv_layer`: the same layer, its sizes read from the buffer's
  header, as the compiled quantized graph calls it on the CPU;
- `tacq gather_columns` on a [1, 16] tensor: a custom op with almost no work,
  the floor of a call through `torch.ops`;

for a 16 x 32 layer (almost no arithmetic) and the demo model's layer shapes.

    python bench/call_overhead.py                 # 2 threads, 9 rounds
Writes bench/results/call-overhead-cpu.{md,json,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, seconds_per_call, write_table_results  # noqa: E402
from e2e_decode import random_quantized_linear  # noqa: E402

SHAPES = [(16, 32), (64, 192), (192, 192), (512, 192), (192, 512)]  # (N out, K in)
ROUTES = ["torch.mm", "torch.ops.aten.mm", "tacq mixed_gemv_stored", "tacq mixed_gemv_layer"]


def calls_for_shape(N: int, K: int, generator) -> dict:
    """{route: zero-argument call} for an N x K layer."""
    x = torch.randn(1, K, generator=generator)
    weight_t = torch.randn(N, K, generator=generator).t()  # nn.Linear's weight as the graph passes it
    out = torch.empty(1, N)
    layer = random_quantized_linear(N, K, 2, generator, -1)
    stored, nnz = layer._buffers.stored, layer._buffers.stored_nnz
    x3 = x.view(1, 1, K)
    aten_mm, stored_op = torch.ops.aten.mm.default, torch.ops.tacq.mixed_gemv_stored.default
    layer_op = torch.ops.tacq.mixed_gemv_layer.default
    return {"torch.mm": lambda: torch.mm(x, weight_t, out=out),
            "torch.ops.aten.mm": lambda: aten_mm(x, weight_t),
            "tacq mixed_gemv_stored": lambda: stored_op(x3, stored, N, 2, -1, nnz, False),
            "tacq mixed_gemv_layer": lambda: layer_op(x3, stored)}


def plot_routes(us: dict, floor: float, path: Path) -> None:
    """Grouped bars: per layer shape, one bar per route; the custom-op floor as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(ROUTES)
    for i, route in enumerate(ROUTES):
        ax.bar([j + i * width for j in range(len(SHAPES))], [us[route, f"{N}x{K}"] for N, K in SHAPES], width,
               label=route)
    ax.axhline(floor, color="black", linewidth=0.8, linestyle="--", label="tacq gather_columns [1, 16]")
    ax.set_xticks([j + width * (len(ROUTES) - 1) / 2 for j in range(len(SHAPES))], [f"{N}x{K}" for N, K in SHAPES])
    ax.set_xlabel("layer N x K, x [1, K] fp32")
    ax.set_ylabel("us per call, fastest round")
    ax.set_title("One call at batch 1 by route (CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="alternating timing rounds (default 9)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per contender and round (default 3000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--name", default="call-overhead-cpu", help="results file stem")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    import tacq_ext  # noqa: F401  (registers torch.ops.tacq)

    generator = torch.Generator().manual_seed(0)
    calls = {}
    for N, K in SHAPES:
        for route, fn in calls_for_shape(N, K, generator).items():
            calls[route, f"{N}x{K}"] = fn
    y, index = torch.randn(1, 16, generator=generator), torch.arange(16)
    gather = torch.ops.tacq.gather_columns.default
    calls["tacq gather_columns", "1x16"] = lambda: gather(y, index)
    best = {key: float("inf") for key in calls}
    with torch.inference_mode():
        for _ in tqdm(range(args.rounds), desc="rounds"):
            for key, fn in calls.items():
                best[key] = min(best[key], seconds_per_call(fn, args.calls))
    us = {key: t * 1e6 for key, t in best.items()}

    rows = ["| layer N x K | " + " | ".join(f"{r} us" for r in ROUTES) + " | layer op - torch.mm us |",
            "|" + "---|" * (len(ROUTES) + 2)]
    for N, K in SHAPES:
        shape = f"{N}x{K}"
        rows.append(f"| {shape} | " + " | ".join(f"{us[r, shape]:.2f}" for r in ROUTES)
                    + f" | {us['tacq mixed_gemv_layer', shape] - us['torch.mm', shape]:+.2f} |")
    floor = us["tacq gather_columns", "1x16"]
    table = "\n".join(rows) + f"\n\n`tacq gather_columns` on [1, 16] (a custom op call with almost no work): {floor:.2f} us"
    print(table)
    stem = write_table_results(args.name, command_line("call_overhead.py", argv), table,
                               [f"us per call, fastest of {args.rounds} alternating rounds of {args.calls} calls; "
                                f"{args.threads} threads; fp32 x [1, K]; tacq: 2 bits, whole rows"],
                               {"us_per_call": {f"{route}/{shape}": v for (route, shape), v in us.items()}})
    plot_routes(us, floor, stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

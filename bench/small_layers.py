"""Per-call time of small layers at batch 1: the shipped demo model's linear
layers (192 wide, 4 blocks of 7 layers) as QuantizedLinear at 2, 3 and 4 bits
(whole rows and groups of 64, random codes, fp16 scales, 0.35 % residual)
against nn.Linear in fp32, x [1, 1, K] in fp32 as the demo decodes. At these
sizes a call is mostly fixed cost, and how full a kernel's vector lanes are
(a 192-code row is less than one 3-bit chunk). Every layer is timed in
alternation with the others, `--rounds` times, keeping each one's fastest
round, so a slow spell of a shared machine hits all alike.

With --compile, each regime's seven layers are one block called eagerly and
through torch.compile(fullgraph=True), where every call costs what the
compiled graph adds per layer (a guard and a size check per tensor argument,
the op called through torch.ops): the fixed cost the demo pays compiled.

    python bench/small_layers.py                 # 2 threads, as bench/demo_decode.py
    python bench/small_layers.py --compile       # a block eager and compiled

To compare two builds, run it once with each first on PYTHONPATH.
Writes bench/results/small-layers-cpu.{md,json,png} (--compile:
small-layers-cpu-compiled.*).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, plot_bars, seconds_per_call, write_table_results  # noqa: E402
from e2e_decode import random_quantized_linear  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "python" / "tacq_ext" / "assets" / "demo_llama" / "config.json"
REGIMES = [(bits, group) for bits in (2, 3, 4) for group in (-1, 64)]


def demo_block_shapes() -> dict:
    """{layer name: (N out, K in)} of one block of the demo model."""
    c = json.loads(DEMO_CONFIG.read_text())
    hidden, inner = c["hidden_size"], c["intermediate_size"]
    kv = c["num_key_value_heads"] * c.get("head_dim", hidden // c["num_attention_heads"])
    return {"q": (hidden, hidden), "k": (kv, hidden), "v": (kv, hidden), "o": (hidden, hidden),
            "gate": (inner, hidden), "up": (inner, hidden), "down": (hidden, inner)}


def label(bits: int, group: int) -> str:
    return f"{bits}-bit " + ("rows" if group == -1 else f"g{group}")


class Block(torch.nn.Module):
    """A block's seven layers called on one input each (k and v are not
    chained to q: the outputs are independent)."""

    def __init__(self, layers: dict):
        super().__init__()
        self.layers = torch.nn.ModuleDict(layers)

    def forward(self, hidden: torch.Tensor, inner: torch.Tensor):
        return tuple(layer(inner if name == "down" else hidden) for name, layer in self.layers.items())


def time_blocks(layers: dict, shapes: dict, x: dict, rounds: int, calls: int):
    """Each regime's block eager and compiled, alternating: (table, {regime/mode: us})."""
    from tqdm.auto import tqdm

    regimes = ["fp32"] + [label(b, g) for b, g in REGIMES]
    hidden, inner = x[shapes["q"][1]], x[shapes["down"][1]]
    calls_of = {}
    for regime in regimes:
        block = Block({name: layers[name, regime] for name in shapes}).eval()
        compiled = torch.compile(block, fullgraph=True, dynamic=False)
        compiled(hidden, inner)
        calls_of[regime, "eager"], calls_of[regime, "compiled"] = block, compiled
    best = {key: float("inf") for key in calls_of}
    for _ in tqdm(range(rounds), desc="rounds"):
        for key, fn in calls_of.items():
            best[key] = min(best[key], seconds_per_call(lambda: fn(hidden, inner), calls))
    rows = ["| regime | eager us | compiled us | eager vs fp32 | compiled vs fp32 |", "|---|---|---|---|---|"]
    for regime in regimes:
        e, c = best[regime, "eager"] * 1e6, best[regime, "compiled"] * 1e6
        rows.append(f"| {regime} | {e:.1f} | {c:.1f} | {best['fp32', 'eager'] * 1e6 / e:.2f}x | "
                    f"{best['fp32', 'compiled'] * 1e6 / c:.2f}x |")
    return "\n".join(rows), {f"{r}/{mode}": t * 1e6 for (r, mode), t in best.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per layer and round (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--compile", action="store_true", help="a block of seven layers, eager and compiled")
    parser.add_argument("--name", default=None, help="results file stem (default small-layers-cpu[-compiled])")
    args = parser.parse_args(argv)
    stem_name = args.name or ("small-layers-cpu-compiled" if args.compile else "small-layers-cpu")
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(0)
    shapes = demo_block_shapes()
    layers = {}  # (layer name, regime label) -> module
    for name, (N, K) in shapes.items():
        layers[name, "fp32"] = torch.nn.Linear(K, N, bias=False)
        for bits, group in REGIMES:
            layers[name, label(bits, group)] = random_quantized_linear(N, K, bits, generator, group)
    x = {K: torch.randn(1, 1, K, generator=generator) for _, K in shapes.values()}
    if args.compile:
        with torch.no_grad():
            table, block_us = time_blocks(layers, shapes, x, args.rounds, args.calls)
        print(table)
        stem = write_table_results(stem_name, command_line("small_layers.py", argv), table,
                                   [f"us per call of a block (7 layers, one input each), fastest of {args.rounds} "
                                    f"alternating rounds of {args.calls} calls; {args.threads} threads; "
                                    "compiled: torch.compile(fullgraph=True, dynamic=False)"],
                                   {"block_us": block_us})
        plot_bars(block_us, stem.with_suffix(".png"), "us per block (7 layers), fastest round",
                  "Demo model layers, batch 1, fp32 x: eager and compiled")
        print(f"wrote {stem}.md, .json and .png")
        return 0
    best = {key: float("inf") for key in layers}
    with torch.no_grad():
        for _ in tqdm(range(args.rounds), desc="rounds"):
            for (name, regime), layer in layers.items():
                seconds = seconds_per_call(lambda: layer(x[shapes[name][1]]), args.calls)
                best[name, regime] = min(best[name, regime], seconds)
    regimes = ["fp32"] + [label(b, g) for b, g in REGIMES]
    block_us = {regime: sum(best[name, regime] for name in shapes) * 1e6 for regime in regimes}
    header = "| layer | N x K | " + " | ".join(regimes) + " |"
    rows = [header, "|" + "---|" * (len(regimes) + 2)]
    for name, (N, K) in shapes.items():
        rows.append(f"| {name} | {N}x{K} | " + " | ".join(f"{best[name, r] * 1e6:.2f}" for r in regimes) + " |")
    rows.append("| block | | " + " | ".join(f"{block_us[r]:.1f} ({block_us['fp32'] / block_us[r]:.2f}x)"
                                           for r in regimes) + " |")
    table = "\n".join(rows)
    print(table)
    stem = write_table_results(stem_name, command_line("small_layers.py", argv), table,
                               [f"us per call, fastest of {args.rounds} alternating rounds of {args.calls} calls; "
                                f"{args.threads} threads; block = the 7 layers of one block (x: vs fp32)"],
                               {"us_per_call": {f"{n}/{r}": best[n, r] * 1e6 for n, r in best},
                                "block_us": block_us})
    plot_bars(block_us, stem.with_suffix(".png"), "us per block (7 layers), fastest round",
              "Demo model layers, batch 1, fp32 x")
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast a Llama-3 LM head in bf16 runs on this CPU at decoding batch
sizes: torch's F.linear against tacq.bf16_gemv (the kernel Bf16GemvLinear
sends up to 16 rows to), in alternating rounds of the same run. tacq_ext keeps
the LM head in the model's dtype (as the method does), and on the 1B model it
holds more bytes than all the quantized blocks together. Reports ms, GB/s of
weights read and % of the read bandwidth measured in the same run, for M = 1,
2, 4, 8 and 16 activation rows.

    python bench/lm_head_cpu.py

Writes bench/results/lm-head-cpu.{md,json,png}. Needs AVX-512 BF16 for the
kernel's column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, measure_read_bandwidth, seconds_per_call, write_table_results  # noqa: E402

HEADS = {"Llama-3.2-1B": (128256, 2048), "Llama-3-8B": (128256, 4096)}  # vocab x hidden
ROWS = (1, 2, 4, 8, 16)
CONTENDERS = ("F.linear", "bf16_gemv")


def plot(results: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADS), figsize=(4.5 * len(HEADS), 3.6), squeeze=False)
    for ax, model in zip(axes[0], HEADS):
        points = [r for r in results if r["model"] == model]
        for name, style in zip(CONTENDERS, ("o-", "s-")):
            ax.plot([r["rows"] for r in points], [r[name]["gb_s"] for r in points], style, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("activation rows M")
        ax.set_ylabel("GB/s of weights read")
        ax.set_title(f"{model} LM head, bf16")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; each contender keeps its fastest")
    parser.add_argument("--calls", type=int, default=3, help="calls per round")
    args = parser.parse_args(argv)
    from tacq_ext import ops

    if not ops.bf16_gemv_supported():
        raise SystemExit("this CPU lacks AVX-512 BF16: tacq.bf16_gemv does not run here")
    bandwidth = measure_read_bandwidth("cpu")
    results = []
    for model, (vocab, hidden) in HEADS.items():
        weight = (0.02 * torch.randn(vocab, hidden)).bfloat16()
        weight_bytes = weight.numel() * 2
        for m in ROWS:
            x = torch.randn(1, m, hidden).bfloat16()
            runs = {"F.linear": lambda: F.linear(x, weight), "bf16_gemv": lambda: ops.bf16_gemv(x, weight)}
            best = {name: float("inf") for name in CONTENDERS}
            for _ in range(args.rounds):
                for name in CONTENDERS:
                    best[name] = min(best[name], seconds_per_call(runs[name], args.calls))
            row = {"model": model, "rows": m, "weight_gb": weight_bytes / 1e9}
            for name in CONTENDERS:
                row[name] = {"ms": best[name] * 1e3, "gb_s": weight_bytes / best[name] / 1e9,
                             "pct_of_bandwidth": 100 * weight_bytes / best[name] / bandwidth}
            results.append(row)
        del weight

    lines = ["| LM head | weights | M | F.linear ms | GB/s | % of bw | bf16_gemv ms | GB/s | % of bw | speedup |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        torch_, ours = r["F.linear"], r["bf16_gemv"]
        lines.append(f"| {r['model']} | {r['weight_gb']:.2f} GB | {r['rows']} | {torch_['ms']:.1f} | "
                     f"{torch_['gb_s']:.1f} | {torch_['pct_of_bandwidth']:.0f} % | {ours['ms']:.1f} | "
                     f"{ours['gb_s']:.1f} | {ours['pct_of_bandwidth']:.0f} % | {torch_['ms'] / ours['ms']:.2f}x |")
    table = "\n".join(lines)
    notes = [f"read bandwidth: {bandwidth / 1e9:.1f} GB/s",
             f"bf16 weight and activations, x of shape [1, M, hidden]; {args.rounds} alternating rounds of "
             f"{args.calls} calls, each contender's fastest round; speedup = F.linear time / bf16_gemv time"]
    stem = write_table_results("lm-head-cpu", command_line("lm_head_cpu.py", argv), table, notes,
                               {"bandwidth": bandwidth, "results": results})
    plot(results, stem.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast torch runs a Llama-3 LM head in bf16 on this CPU at decoding batch
sizes. tacq_ext keeps the LM head in the model's dtype (as the method does), so
decoding runs it through torch's F.linear every token; on the 1B model it holds
more bytes than all the quantized blocks together. Reports ms, GB/s of weights
read and % of the read bandwidth measured in the same run, for M = 1, 2, 4 and
16 activation rows.

    python bench/lm_head_cpu.py

Writes bench/results/lm-head-cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, measure_read_bandwidth, time_cpu, write_table_results  # noqa: E402

HEADS = {"Llama-3.2-1B": (128256, 2048), "Llama-3-8B": (128256, 4096)}  # vocab x hidden
ROWS = (1, 2, 4, 16)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args(argv)
    bandwidth = measure_read_bandwidth("cpu")
    results = []
    for model, (vocab, hidden) in HEADS.items():
        weight = (0.02 * torch.randn(vocab, hidden)).bfloat16()
        weight_bytes = weight.numel() * 2
        for m in ROWS:
            x = torch.randn(1, m, hidden).bfloat16()
            seconds = time_cpu(lambda: F.linear(x, weight), reps=args.reps, warmup=2)
            results.append({"model": model, "rows": m, "ms": seconds * 1e3, "gb_s": weight_bytes / seconds / 1e9,
                            "pct_of_bandwidth": 100 * weight_bytes / seconds / bandwidth,
                            "weight_gb": weight_bytes / 1e9})
        del weight

    lines = ["| LM head | weights | M | ms | GB/s | % of read bandwidth |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['weight_gb']:.2f} GB | {r['rows']} | {r['ms']:.1f} | {r['gb_s']:.1f} | "
                     f"{r['pct_of_bandwidth']:.0f} % |")
    table = "\n".join(lines)
    notes = [f"read bandwidth: {bandwidth / 1e9:.1f} GB/s",
             "torch `F.linear`, bf16 weight and activations, x of shape [1, M, hidden]"]
    write_table_results("lm-head-cpu", command_line("lm_head_cpu.py", argv), table, notes,
                        {"bandwidth": bandwidth, "results": results})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

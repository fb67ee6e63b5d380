"""What storing a layer's rows at two widths costs (TACQConfig.wide_rows): one
layer as a single 2-bit QuantizedLinear against the same shape as a
RowSplitLinear with a random fraction of its rows at 3 bits (two mixed_gemv
calls, a concatenation and tacq.gather_columns), bf16 x, at decode (1, 4
rows) and prefill (512 rows) batch sizes. The two are timed in alternation,
`--rounds` times, and each reports its fastest round, so a slow spell of a
shared machine hits both.

    python bench/row_split_layer.py                  # Llama-3-8B MLP and Llama-3.2-1B shapes

Writes bench/results/row-split-layer-<device>.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, seconds_per_call, write_table_results  # noqa: E402
from e2e_decode import random_quantized_linear, random_split_linear  # noqa: E402

SHAPES = [(14336, 4096), (4096, 14336), (8192, 2048), (512, 2048)]  # (N, K): 8B MLP, 1B MLP, 1B k/v


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wide-rows", type=float, default=0.1, help="fraction of rows at 3 bits (default 0.1)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--name", default="row-split-layer-cpu", help="results file stem")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import tacq_ext  # noqa: F401  (registers the ops)
    from tqdm.auto import tqdm

    rows, payload = [], []
    generator = torch.Generator().manual_seed(0)
    jobs = [(N, K, M) for N, K in SHAPES for M in (1, 4, 512)]
    for N, K, M in tqdm(jobs, desc="shapes"):
        single = random_quantized_linear(N, K, 2, generator)
        split = random_split_linear(N, K, 2, args.wide_rows, generator)
        x = torch.randn(M, K, generator=generator).bfloat16()
        calls = max(3, int(2e8 // (N * K * M))) if M > 16 else max(20, int(4e9 // (N * K)))
        best = {"single": float("inf"), "split": float("inf")}
        with torch.no_grad():
            for _ in range(args.rounds):
                best["single"] = min(best["single"], seconds_per_call(lambda: single(x), calls))
                best["split"] = min(best["split"], seconds_per_call(lambda: split(x), calls))
        ratio = best["split"] / best["single"]
        rows.append(f"| {N}x{K} | {M} | {best['single'] * 1e6:.0f} | {best['split'] * 1e6:.0f} "
                    f"| {(best['split'] - best['single']) * 1e6:+.0f} | {ratio:.2f}x |")
        payload.append({"N": N, "K": K, "M": M, "single_s": best["single"], "split_s": best["split"]})
    table = "\n".join(["| N x K | rows of x | 2-bit layer us | split layer us | difference us | split / single |",
                       "|---|---|---|---|---|---|"] + rows)
    print(table)
    stem = write_table_results(args.name, command_line("row_split_layer.py", argv), table,
                               [f"split: {args.wide_rows:g} of the rows at 3 bits, the others at 2; group size 64, "
                                f"0.35 % kept weights; fastest of {args.rounds} alternating rounds"],
                               {"wide_rows": args.wide_rows, "results": payload})
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

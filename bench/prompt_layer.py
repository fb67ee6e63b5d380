"""One layer of a prompt (prefill) on the CPU: tacq.mixed_gemv with 512 rows
of x, which multiplies blocks of the dense weight with torch's GEMM, against
F.linear with the whole dense weight in x's dtype (what the unquantized model
runs), at Llama-3-8B MLP shapes, 2, 3 and 4 bits, groups of 64 and per-row
scales, bf16 and fp32 x. The two are timed in alternation, `--rounds` times,
and each reports its fastest round, so a slow spell of a shared machine hits
both.

    python bench/prompt_layer.py --threads 2

Writes bench/results/prompt-layer-cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, seconds_per_call, write_table_results  # noqa: E402
from e2e_decode import random_quantized_linear  # noqa: E402

SHAPES = [(14336, 4096), (4096, 14336)]  # (N, K): the 8B's gate/up and down projections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512, help="rows of x, the prompt length (default 512)")
    parser.add_argument("--bits", default="2,3,4", help="comma-separated widths (default 2,3,4)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (default 5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--name", default="prompt-layer-cpu", help="results file stem")
    args = parser.parse_args(argv)
    if args.rows <= 16:
        parser.error("--rows must be more than 16 (fewer rows run the fused kernel, not the prompt path)")
    if args.threads:
        torch.set_num_threads(args.threads)
    import tacq_ext  # noqa: F401  (registers the ops)
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(0)
    jobs = [(N, K, bits, group_size, dtype) for N, K in SHAPES for bits in map(int, args.bits.split(","))
            for group_size in (64, -1) for dtype in (torch.bfloat16, torch.float32)]
    rows, payload = [], []
    for N, K, bits, group_size, dtype in tqdm(jobs, desc="layers"):
        layer = random_quantized_linear(N, K, bits, generator, group_size)
        weight = layer.dense_weight(dtype)
        x = torch.randn(args.rows, K, generator=generator).to(dtype)
        best = {"ours": float("inf"), "F.linear": float("inf")}
        with torch.no_grad():
            for _ in range(args.rounds):
                best["ours"] = min(best["ours"], seconds_per_call(lambda: layer(x), 3))
                best["F.linear"] = min(best["F.linear"], seconds_per_call(
                    lambda: torch.nn.functional.linear(x, weight), 3))
        dtype_name = str(dtype).removeprefix("torch.")
        scales = "per row" if group_size == -1 else f"groups of {group_size}"
        rows.append(f"| {N}x{K} | {bits} | {scales} | {dtype_name} | {best['F.linear'] * 1e3:.1f} "
                    f"| {best['ours'] * 1e3:.1f} | {best['F.linear'] / best['ours']:.2f}x |")
        payload.append({"N": N, "K": K, "bits": bits, "group_size": group_size, "x_dtype": dtype_name,
                        "rows": args.rows, "ours_s": best["ours"], "f_linear_s": best["F.linear"]})
    table = "\n".join(["| N x K | bits | scales | x | F.linear ms | ours ms | speed vs F.linear |",
                       "|---|---|---|---|---|---|---|"] + rows)
    print(table)
    stem = write_table_results(args.name, command_line("prompt_layer.py", argv), table,
                               [f"{args.rows} rows of x; 0.35 % kept weights; F.linear on the dense weight in "
                                f"x's dtype; fastest of {args.rounds} alternating rounds of 3 calls; "
                                f"{torch.get_num_threads()} threads"],
                               {"rows": args.rows, "results": payload})
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What int8 activations (tacq_ext.set_int8_activations) cost in task accuracy:
the shipped demo model quantized with TACQ (calibrated on sql), each checkpoint
evaluated on the demo tasks with x_int8 off and on, over the same test examples.
Only the activations' rounding differs between the two columns of a row.

    python bench/int8_accuracy.py                      # 309 sql, 400 arith and facts examples
    python bench/int8_accuracy.py --limit 32 --quick   # smoke run

Writes bench/results/int8-accuracy.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, write_table_results  # noqa: E402

import tacq_ext  # noqa: E402
from tacq_ext.calib_data import make_batches  # noqa: E402
from tacq_ext.demo.evaluate import task_accuracy  # noqa: E402
from tacq_ext.demo.model import load_demo_model  # noqa: E402
from tacq_ext.demo.tasks import get_task, load_split  # noqa: E402
from tacq_ext.demo.tokenizer import EOS  # noqa: E402

TASKS = ("sql", "arith", "facts")
REGIMES = ((2, -1), (2, 64), (3, -1), (3, 64))  # (bits, group size); -1: per-row scales


def accuracies(model, tokenizer, test_sets) -> dict:
    return {name: task_accuracy(model, tokenizer, get_task(name), examples, progress=False)
            for name, examples in test_sets.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=400, help="test examples per task, at most (sql has 309)")
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="2-bit per-row only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_demo_model()
    test_sets = {name: load_split(name, "test", args.limit, at_most=True) for name in TASKS}
    calib = make_batches(load_split("sql", "calib", args.calib_size), tokenizer, 8, eos_token_id=EOS)
    regimes = REGIMES[:1] if args.quick else REGIMES
    rows = [{"weights": "fp32", "x_fp": accuracies(model, tokenizer, test_sets), "x_int8": None}]
    for bits, group_size in tqdm(regimes, desc="regimes"):
        quantized = copy.deepcopy(model)
        tacq_ext.quantize_model(quantized, calib, tacq_ext.TACQConfig(bits=bits, group_size=group_size,
                                                                      ratio=0.0035, method="tacq"), progress=False)
        row = {"weights": f"TACQ {bits}-bit, " + ("per row" if group_size == -1 else f"groups of {group_size}")}
        row["x_fp"] = accuracies(quantized, tokenizer, test_sets)
        tacq_ext.set_int8_activations(quantized)
        row["x_int8"] = accuracies(quantized, tokenizer, test_sets)
        rows.append(row)

    counts = {name: len(examples) for name, examples in test_sets.items()}
    lines = ["| weights | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for row in rows:
        cells = []
        for name in TASKS:
            fp = 100 * row["x_fp"][name]
            if row["x_int8"] is None:
                cells.append(f"{fp:.1f}")
            else:
                q = 100 * row["x_int8"][name]
                cells.append(f"{fp:.1f} / {q:.1f} ({q - fp:+.1f})")
        lines.append(f"| {row['weights']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    notes = [f"demo model, TACQ calibrated on sql ({args.calib_size} examples), ratio 0.0035; test examples: "
             + ", ".join(f"{n} {c}" for n, c in counts.items())
             + "; accuracy in %, fp32 activations / int8 activations (difference)"]
    write_table_results("int8-accuracy" + ("-quick" if args.quick else ""), command_line("int8_accuracy.py", argv),
                        table, notes, {"test_examples": counts, "rows": rows})
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

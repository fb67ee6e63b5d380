"""`tacq demo`: quantize the shipped demo Llama with TACQ and the baselines,
evaluate every task through QuantizedLinear, print the table and write
results.json + accuracy_vs_bits.png to --out."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..commands import command
from ..config import METHODS
from .grid import GridSettings, format_table, run_grid
from .model import load_demo_model
from .plot import plot_accuracy
from .tasks import TASKS, TEST_SEED, load_split

DEFAULT_BITS = (2, 3)
FULL_BITS = (2, 3, 4)
FULL_LIMIT, FULL_SEEDS, FULL_PER_ROW_BITS = 400, (TEST_SEED, TEST_SEED + 1, TEST_SEED + 2), (2,)


def _csv(kind, choices=None):
    def parse(text):
        items = [kind(x) for x in text.split(",") if x]
        bad = [x for x in items if choices is not None and x not in choices]
        if bad or not items:
            raise ValueError(f"expected a comma-separated list from {choices}, got {text!r}")
        return items
    return parse


def _add_demo(p):
    p.add_argument("--out", default="demo_out", help="folder for results.json and accuracy_vs_bits.png")
    p.add_argument("--full", action="store_true",
                   help="the whole grid: every task as calibration source x all methods x 2/3/4 bits, plus "
                        "2 bits with per-row scales; 400 test examples per task (sql: all 309); 3 calibration "
                        "seeds, accuracy as mean±sd (hours on a small CPU)")
    p.add_argument("--calib-task", default="arith", help=f"calibration task: {' | '.join(TASKS)} (default arith)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default all)")
    p.add_argument("--bits", default=None, help="comma-separated bit widths (default 2,3; --full: 2,3,4)")
    p.add_argument("--tasks", default=",".join(TASKS), help="tasks to evaluate (default all)")
    p.add_argument("--limit", type=int, default=None, help="test examples per task, at most (default 100; --full 400)")
    p.add_argument("--seeds", default=None,
                   help=f"comma-separated calibration sample seeds (default {TEST_SEED}; --full 3 seeds)")
    p.add_argument("--per-row-bits", default=None,
                   help="comma-separated bit widths also run with per-row scales (default none; --full 2)")
    p.add_argument("--calib-size", type=int, default=64, help="calibration examples (default 64)")
    p.add_argument("--ratio", type=float, default=0.0035, help="fraction of weights kept in fp16")
    p.add_argument("--group-size", type=int, default=64, help="quantization group size (-1: one per row)")
    p.add_argument("--model", default=None, help="demo model directory (default: the shipped checkpoint)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--write-data", metavar="DIR", default=None,
                   help="only write each task's calibration and test examples (--calib-size and --limit of them) "
                        "as prompt/answer jsonl files to DIR, for `tacq quantize` and `tacq eval`, and exit")


def settings_from(args) -> GridSettings:
    def parsed(name, text, kind, choices):
        try:
            return _csv(kind, choices)(text)
        except ValueError as e:
            raise ValueError(f"--{name}: {e}") from None

    bits = parsed("bits", args.bits, int, (2, 3, 4)) if args.bits else list(FULL_BITS if args.full else DEFAULT_BITS)
    calib_tasks = list(TASKS) if args.full else parsed("calib-task", args.calib_task, str, tuple(TASKS))
    seeds = parsed("seeds", args.seeds, int, None) if args.seeds else list(FULL_SEEDS if args.full else [TEST_SEED])
    per_row = (parsed("per-row-bits", args.per_row_bits, int, (2, 3, 4)) if args.per_row_bits
               else list(FULL_PER_ROW_BITS if args.full else []))
    limit = args.limit if args.limit is not None else FULL_LIMIT if args.full else 100
    return GridSettings(calib_tasks=calib_tasks, methods=parsed("methods", args.methods, str, METHODS), bits=bits,
                        eval_tasks=parsed("tasks", args.tasks, str, tuple(TASKS)), limit=limit,
                        calib_size=args.calib_size, ratio=args.ratio, group_size=args.group_size,
                        per_row_bits=per_row, seeds=seeds)


def write_task_files(directory, tasks, calib_size: int, test_size: int) -> list:
    """<task>_calib.jsonl and <task>_test.jsonl per task: {"prompt", "answer"} lines."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        for split, n in (("calib", calib_size), ("test", test_size)):
            file = out / f"{task}_{split}.jsonl"
            lines = (json.dumps({"prompt": ex.prompt, "answer": ex.answer}) for ex in load_split(task, split, n))
            file.write_text("".join(line + "\n" for line in lines))
            written.append(file)
    return written


@command("demo", "quantize the shipped demo Llama with TACQ and the baselines and tabulate task accuracy")(_add_demo)
def run_demo(args) -> int:
    if args.write_data:
        settings = settings_from(args)
        for file in write_task_files(args.write_data, settings.eval_tasks, settings.calib_size, settings.limit):
            print(f"wrote {file}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args)
    model, tokenizer = load_demo_model(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = run_grid(model, tokenizer, settings, progress=not args.quiet)
    seconds = time.perf_counter() - start
    table = format_table(rows, settings.eval_tasks)
    print(table)
    counts = {t: len(load_split(t, "test", settings.limit, at_most=True)) for t in settings.eval_tasks}
    spread = f", mean±sd over {len(settings.seeds)} calibration seeds" if len(settings.seeds) > 1 else ""
    print(f"accuracy in % on " + ", ".join(f"{n} {t}" for t, n in counts.items()) + f" test examples{spread}; "
          f"tok/s: greedy decoding at batch 1, median of {settings.speed_rounds} rounds; vs fp32: median ratio of "
          f"those rounds to the fp32 model's, run in alternation; {seconds:.0f}s in all")
    (out / "table.txt").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(
        {"settings": asdict(settings), "test_examples": counts, "seconds": seconds, "torch": torch.__version__,
         "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
         "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    written = [out / "results.json", out / "table.txt"]
    try:
        written.append(plot_accuracy(rows, settings.eval_tasks, out / "accuracy_vs_bits.png"))
    except ModuleNotFoundError as e:
        print(f"no accuracy plot: {e.name} is not installed (pip install 'tacq_ext[plot]')")
    print("wrote " + ", ".join(map(str, written)))
    return 0

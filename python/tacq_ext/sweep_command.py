"""`tacq sweep`: the accuracy-vs-bits frontier of the demo model (task
accuracy) or of a local Hugging Face causal LM (answer loss on an evaluation
file), written as sweep.md, sweep.json and pareto.png."""

from __future__ import annotations

import math
import platform
import subprocess
import time
from pathlib import Path
from typing import List

import torch

from .calib_data import Example, make_batches, read_examples
from .commands import command
from .config import METHODS
from .saliency import default_loss
from .sweep import RECIPES, SweepGrid, mark_pareto, sweep
from .sweep_report import write_sweep


def _list(name: str, kind, text: str, choices=None) -> list:
    try:
        items = [kind(x) for x in text.split(",") if x]
    except ValueError:
        items = []
    bad = [x for x in items if choices is not None and x not in choices]
    if bad or not items:
        allowed = f" from {', '.join(map(str, choices))}" if choices is not None else ""
        raise ValueError(f"--{name}: expected a comma-separated list{allowed}, got {text!r}")
    return items


def _add_sweep(p):
    source = p.add_argument_group("model (one of)")
    source.add_argument("--demo", action="store_true", help="the shipped demo model, scored by task accuracy")
    source.add_argument("--model", help="local Hugging Face causal LM directory, scored by answer loss on --eval")
    hf = p.add_argument_group("with --model")
    hf.add_argument("--calib", help="calibration file: prompt/answer jsonl, GSM8k, MMLU, Spider, or plain .txt")
    hf.add_argument("--eval", help="evaluation file, same formats (.txt: loss on every token)")
    hf.add_argument("--tokenizer", help="Hugging Face tokenizer directory (default: the model's)")
    hf.add_argument("--format", default="auto", help="jsonl | gsm8k | mmlu | spider | text | auto")
    hf.add_argument("--num-samples", type=int, default=128, help="calibration examples (default 128)")
    hf.add_argument("--eval-samples", type=int, default=200, help="evaluation examples (default 200)")
    hf.add_argument("--batch-size", type=int, default=4)
    hf.add_argument("--max-length", type=int, default=512, help="tokens per example (.txt chunks too)")
    hf.add_argument("--device", default="cpu")
    hf.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    demo = p.add_argument_group("with --demo")
    demo.add_argument("--calib-task", default="sql", help="calibration task (default sql)")
    demo.add_argument("--tasks", default=None, help="evaluated tasks (default: the calibration task)")
    demo.add_argument("--limit", type=int, default=400, help="test examples per task, at most (default 400)")
    demo.add_argument("--calib-size", type=int, default=64, help="calibration examples (default 64)")
    demo.add_argument("--calib-seed", type=int, default=None, help="calibration sample seed (default: the demo's)")
    demo.add_argument("--demo-metric", default="accuracy", choices=("accuracy", "loss"),
                      help="task accuracy (greedy decoding) or answer loss on the test examples (one forward "
                           "pass per batch: far cheaper, less noisy)")
    p.add_argument("--methods", default="rtn,gptq,tacq", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--bits", default="2,3", help="comma-separated bit widths (default 2,3)")
    p.add_argument("--group-sizes", default="-1,64", help="comma-separated group sizes, -1 = per row (default -1,64)")
    p.add_argument("--ratios", default="0.0035", help="comma-separated kept-weight ratios (default 0.0035)")
    p.add_argument("--wide-rows", default="0",
                   help="comma-separated fractions of the weights stored with one bit more, as whole rows "
                        "(tacq at 2 or 3 bits; default 0)")
    p.add_argument("--recipes", default="paper", help=f"comma-separated, from {', '.join(RECIPES)} (default paper)")
    p.add_argument("--reference", default="gptq", help="quantizer behind Q(W): gptq | rtn")
    p.add_argument("--out", default="sweep_out", help="folder for sweep.md, sweep.json, pareto.png")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def text_examples(path, tokenizer, max_length: int) -> List[Example]:
    """A plain text file cut into chunks of at most max_length - 1 tokens
    (one is left for bos), whole lines each where a line fits; the loss is on
    every token (empty prompt)."""
    lines = Path(path).read_text().splitlines(keepends=True)
    examples, chunk, used = [], "", 0
    for line in lines:
        n = len(tokenizer.encode(line, add_special_tokens=False))
        if chunk and used + n > max_length - 1:
            examples.append(Example("", chunk))
            chunk, used = "", 0
        chunk, used = chunk + line, used + n
    if chunk.strip():
        examples.append(Example("", chunk))
    if not examples:
        raise ValueError(f"{path} holds no text")
    return examples


@torch.no_grad()
def mean_answer_loss(model, batches, examples: int) -> float:
    """Mean over the examples of each one's answer loss (default_loss sums
    the per-example means of a batch)."""
    return sum(float(default_loss(model, b)) for b in batches) / examples


def _examples(path, fmt: str, tokenizer, max_length: int) -> List[Example]:
    if fmt == "text" or (fmt == "auto" and Path(path).suffix == ".txt"):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found")
        return text_examples(path, tokenizer, max_length)
    return read_examples(path, fmt)


def _hf_setup(args):
    """(model, calib batches, evaluate, metric, higher_is_better, meta) for --model."""
    from .cli import _load_hf, _runtime

    for name in ("calib", "eval"):
        if not getattr(args, name):
            raise ValueError(f"--model needs --{name} FILE")
    device, dtype = _runtime(args)
    model, tokenizer = _load_hf(args.model, args.tokenizer, device, dtype)
    batch = lambda examples: [{k: v.to(device) for k, v in b.items()} for b in
                              make_batches(examples, tokenizer, args.batch_size, args.max_length)]
    calib = batch(_examples(args.calib, args.format, tokenizer, args.max_length)[: args.num_samples])
    evaluation = _examples(args.eval, args.format, tokenizer, args.max_length)[: args.eval_samples]
    eval_batches = batch(evaluation)

    def evaluate(m):
        loss = mean_answer_loss(m, eval_batches, len(evaluation))
        return {"loss": loss, "perplexity": math.exp(loss)}

    meta = {"model": str(args.model), "calib": f"{args.calib}: {len(calib)} batches",
            "eval": f"{args.eval}: {len(evaluation)} examples"}
    return model, calib, evaluate, "loss", False, meta


def _demo_setup(args):
    """(model, calib batches, evaluate, metric, higher_is_better, meta) for --demo."""
    from .demo.evaluate import task_accuracy
    from .demo.model import load_demo_model
    from .demo.tasks import TASKS, TEST_SEED, get_task, load_split
    from .demo.tokenizer import EOS

    calib_task = _list("calib-task", str, args.calib_task, tuple(TASKS))[0]
    tasks = _list("tasks", str, args.tasks or calib_task, tuple(TASKS))
    if args.limit <= 0 or args.calib_size <= 0:
        raise ValueError("--limit and --calib-size must be positive")
    model, tokenizer = load_demo_model()
    seed = TEST_SEED if args.calib_seed is None else args.calib_seed
    calib = make_batches(load_split(calib_task, "calib", args.calib_size, seed), tokenizer, 8, eos_token_id=EOS)
    tests = {t: load_split(t, "test", args.limit, at_most=True) for t in tasks}
    quiet, loss = args.quiet, args.demo_metric == "loss"
    test_batches = {t: make_batches(e, tokenizer, 16, eos_token_id=EOS) for t, e in tests.items()}

    def evaluate(m):
        if loss:
            values = {f"{t} loss": mean_answer_loss(m, test_batches[t], len(tests[t])) for t in tasks}
        else:
            values = {t: task_accuracy(m, tokenizer, get_task(t), tests[t], progress=not quiet) for t in tasks}
        mean = "mean loss" if loss else "mean"
        return {**values, mean: sum(values.values()) / len(values)} if len(tasks) > 1 else values

    meta = {"model": "demo", "calib": f"{calib_task}: {args.calib_size} examples, seed {seed}",
            "eval": ", ".join(f"{t}: {len(e)} test examples" for t, e in tests.items())}
    metric = ("mean loss" if loss else "mean") if len(tasks) > 1 else (f"{tasks[0]} loss" if loss else tasks[0])
    return model, calib, evaluate, metric, not loss, meta


def _commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + (" (uncommitted changes)" if dirty else "")) if head else "unknown"


@command("sweep", "accuracy (or loss) against average stored bits over methods x bits x group sizes x ratios")(_add_sweep)
def run_sweep(args) -> int:
    if args.demo == bool(args.model):
        raise ValueError("give exactly one of --demo and --model DIR")
    grid = SweepGrid(methods=_list("methods", str, args.methods, METHODS),
                     bits=_list("bits", int, args.bits, (2, 3, 4)),
                     group_sizes=_list("group-sizes", int, args.group_sizes),
                     ratios=_list("ratios", float, args.ratios),
                     wide_rows=_list("wide-rows", float, args.wide_rows),
                     recipes={name: dict(RECIPES[name], reference=args.reference)
                              for name in _list("recipes", str, args.recipes, tuple(RECIPES))})
    grid.configs()  # option errors before any model is loaded
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = _demo_setup if args.demo else _hf_setup
    model, calib, evaluate, metric, higher_is_better, meta = setup(args)
    start = time.perf_counter()
    report = lambda p: None if args.quiet else print(
        f"{p.method:<16} {p.recipe:<12} {p.bits} bits group {p.group_size:>4} ratio {p.ratio:<7g} "
        f"wide {p.wide_rows:<5g} "
        f"{p.avg_bits:.3f} avg bits  " + " ".join(f"{k} {v:.4g}" for k, v in p.metrics.items()), flush=True)
    points = sweep(model, calib, evaluate, grid, progress=not args.quiet, on_point=report)
    mark_pareto(points, metric, higher_is_better)
    meta.update(seconds=time.perf_counter() - start, commit=_commit(), torch=torch.__version__,
                threads=torch.get_num_threads(), machine=platform.processor() or platform.machine())
    written = write_sweep(points, args.out, metric, higher_is_better, meta)
    print((Path(args.out) / "sweep.md").read_text())
    print(f"{meta['seconds']:.0f}s; wrote " + ", ".join(map(str, written)))
    return 0

"""Decoding speed of the shipped demo model: fp32 against the same model
quantized with TACQ (2 and 3 bits, per row and groups of 64), greedy decoding
at batch 1 (the demo's own tokens/s measure), in interleaved rounds so that
the shared machine's drift hits every model alike.

    python bench/demo_decode.py                 # 7 rounds, 2 threads
    python bench/demo_decode.py --rounds 3 --threads 1
    python bench/demo_decode.py --compile       # every model under torch.compile, static KV cache
    python bench/demo_decode.py --compile --cpp-wrapper   # ... with Inductor's C++ wrapper
    python bench/demo_decode.py --compile --int-args      # ... and each quantized model's layers
                                                          # passing their sizes as ints, as before the header

Each round times every model once over the same prompts, starting one model
further along the list than the round before, so that no model always runs
right after fp32; the table gives the median and the best round per model, the
ratio of medians to fp32, and each round's ratio to the fp32 model of the same
round (median, range, how many rounds the model was slower, and a one-sided
sign test: how likely a model no faster than fp32 would be to win as many
rounds). A second copy of the fp32 model, timed like the others, is the
control: its row is what the machine's noise alone does to those columns (a
model no faster than fp32 is slower in about half the rounds).

--compile runs every model's forward through
torch.compile(fullgraph=True) with a static KV cache, as bench/e2e_decode.py
--modes compiled does, with the prompts left-padded with spaces to one length
(each new shape would compile again), after an untimed round that compiles.
--cpp-wrapper passes options={"cpp_wrapper": True} to every torch.compile: the
compiled graph calls its kernels and the custom ops from generated C++, not
from a generated Python function (a long first compile).
Writes bench/results/demo-decode-cpu.{md,json,png}.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, plot_bars, write_table_results  # noqa: E402

REGIMES = [(2, -1), (2, 64), (3, -1), (3, 64)]  # (bits, group size)
CONTROL = "fp32, second copy (control)"


def quantized_models(model, tokenizer, calib_task: str):
    """{label: model quantized with TACQ on calib_task's calibration split} per regime."""
    from tacq_ext import TACQConfig, quantize_model
    from tacq_ext.calib_data import make_batches
    from tacq_ext.demo.tasks import load_split
    from tacq_ext.demo.tokenizer import EOS

    calib = make_batches(load_split(calib_task, "calib", 32, 0), tokenizer, 8, eos_token_id=EOS)
    out = {}
    for bits, group_size in REGIMES:
        quantized = copy.deepcopy(model)
        quantize_model(quantized, calib, TACQConfig(bits=bits, group_size=group_size), progress=False)
        out[f"tacq {bits}-bit, " + ("per row" if group_size == -1 else f"groups of {group_size}")] = quantized
    return out


def with_int_args(model):
    """A copy of the quantized ``model`` whose layers call mixed_gemv_stored
    with their sizes as int arguments, not mixed_gemv_layer: a comparison
    only, made by clearing QuantizedLinear's private ``reads_header`` flag,
    which the next rebuild of a layer's stored buffer sets again."""
    from tacq_ext import QuantizedLinear

    copied = copy.deepcopy(model)
    for layer in copied.modules():
        if isinstance(layer, QuantizedLinear):
            layer._buffers.reads_header = False
    return copied


def chance_of_winning(wins: int, losses: int) -> float:
    """One-sided sign test: the probability that a model no faster than fp32
    wins at least ``wins`` of ``wins + losses`` paired rounds (ties left out)."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per model (default 7)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per round, 32 new tokens each")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile(fullgraph=True) every model, static KV cache")
    parser.add_argument("--cpp-wrapper", action="store_true",
                        help="with --compile: Inductor's C++ wrapper (options={'cpp_wrapper': True})")
    parser.add_argument("--int-args", action="store_true",
                        help="also time a copy of each quantized model whose layers pass their sizes as int "
                             "arguments (mixed_gemv_stored) instead of reading them from the stored layer's "
                             "header (mixed_gemv_layer)")
    parser.add_argument("--name", default="demo-decode-cpu", help="results file stem")
    args = parser.parse_args(argv)
    if args.cpp_wrapper and not args.compile:
        parser.error("--cpp-wrapper needs --compile")

    from tqdm.auto import tqdm

    from tacq_ext.demo.measure import decode_tokens_per_second
    from tacq_ext.demo.model import load_demo_model
    from tacq_ext.demo.tasks import load_split

    torch.set_num_threads(args.threads)
    model, tokenizer = load_demo_model()
    models = {"fp32": model, CONTROL: copy.deepcopy(model), **quantized_models(model, tokenizer, "arith")}
    if args.int_args:
        models.update({f"{label}, sizes as int args": with_int_args(m) for label, m in list(models.items())[2:]})
    prompts = [ex.prompt for ex in load_split("sql", "test", args.prompts, at_most=True)]
    if args.compile:  # one graph for the prompt, one for a step (fullgraph raises on a break)
        longest = max(len(prompt) for prompt in prompts)
        prompts = [prompt.rjust(longest) for prompt in prompts]  # one prompt length, one cache size
        # the models share LlamaForCausalLM.forward's code, whose graphs count against one limit
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(models))
        for m in models.values():
            m.forward = torch.compile(m.forward, fullgraph=True, dynamic=False,
                                      options={"cpp_wrapper": True} if args.cpp_wrapper else None)
            m.generation_config.cache_implementation = "static"
        for m in tqdm(models.values(), desc="compiling"):  # an untimed round
            decode_tokens_per_second(m, tokenizer, prompts)
    results = {label: [] for label in models}
    labels = list(models)
    for r in tqdm(range(args.rounds), desc="rounds"):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            results[label].append(decode_tokens_per_second(models[label], tokenizer, prompts))

    base = statistics.median(results["fp32"])
    lines = ["| model | tok/s, median | best round | median vs fp32 | same round vs fp32: median (min-max), "
             "rounds slower | sign test: p of winning as often by chance |", "|---|---|---|---|---|---|"]
    for label, v in results.items():
        paired = [a / b for a, b in zip(v, results["fp32"])]
        slower, faster = sum(r < 1 for r in paired), sum(r > 1 for r in paired)
        p = f"{chance_of_winning(faster, slower):.2g}" if label != "fp32" else "-"
        lines.append(f"| {label} | {statistics.median(v):.1f} | {max(v):.1f} | {statistics.median(v) / base:.2f}x | "
                     f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f}), "
                     f"{slower} of {len(paired)} | {p} |")
    table = "\n".join(lines)
    print(table)
    notes = [f"rounds: {args.rounds}, prompts per round: {len(prompts)} (sql test split), 32 new tokens each"
             + (", torch.compile(fullgraph=True) + static KV cache" if args.compile else ", eager")
             + (", Inductor's C++ wrapper" if args.cpp_wrapper else ""),
             "each round starts one model further along the rows than the round before; "
             f"'{CONTROL}' is a deep copy of fp32, the noise floor of the columns"]
    stem = write_table_results(args.name, command_line("demo_decode.py", argv), table, notes,
                               {"tokens_per_second": results})
    plot_bars({label: statistics.median(v) for label, v in results.items()}, stem.with_suffix(".png"),
              "tokens/s (median round)", "Demo model, greedy decoding, batch 1")
    print(f"wrote {stem}.md, .json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Method-level costs, on a randomly initialised Llama-shaped model:

1. saliency collection for one batch vs one training step (forward + backward)
   of the same model on the same batch: time (median of repeats after a
   warm-up) and peak memory above the loaded model (each measured cold in a
   fresh process, peak RSS reset just before). "Training step minus its
   weight gradients" is a training step whose gradient buffers exist before
   the measurement starts: subtracting their size from a step that allocates
   them would undercount, since gradients grow while activations are freed.
   Memory is measured twice: with glibc's mmap threshold fixed at 64 KiB,
   so freed tensors leave RSS at once and the peak tracks live tensors, and
   with glibc's default (a threshold that grows as large blocks are freed),
   where RSS also holds freed heap pages depending on allocation order.
   Times come from the default-malloc runs (a fixed threshold adds page
   faults). Goals: saliency <= 2.5x the step's time and <= 1.3x that memory;
2. a whole quantize_model run (tacq, 2-bit, ratio 0.0035) with its time per stage.

    python bench/bench_method.py              # ~100M parameters, 32 x 256 tokens, batch 4
    python bench/bench_method.py --quick      # tiny model, smoke run
    python bench/bench_method.py --layers 4   # a shallower model, if the full one takes too long
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import tacq_ext  # noqa: E402
from tacq_ext.saliency import accumulate_gradient_stats, default_loss  # noqa: E402
from tacq_ext.targets import find_targets  # noqa: E402


def model_config(args) -> LlamaConfig:
    if args.quick:
        return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2)
    return LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=args.layers,
                       num_attention_heads=12, num_key_value_heads=4)


def make_batches(cfg: LlamaConfig, samples: int, tokens: int, batch_size: int):
    """Random token ids; the loss is on the second half of each sample."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(samples // batch_size):
        ids = torch.randint(0, cfg.vocab_size, (batch_size, tokens), generator=g)
        labels = ids.clone()
        labels[:, : tokens // 2] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _status_bytes(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def peak_above_now(fn) -> int:
    """Peak resident memory fn() adds to what the process holds now (Linux:
    the high-water mark is reset through /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - base


def measure(args) -> dict:
    """Child process: one kind of pass on one batch: saliency, train (weight
    gradients allocated by the step) or train-grads-ready (allocated before)."""
    cfg = model_config(args)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    batch = make_batches(cfg, args.batch_size, args.tokens, args.batch_size)[0]
    targets = find_targets(model)

    def saliency():
        accumulate_gradient_stats(model, [batch], targets, progress=False,
                                  activation_checkpointing=args.measure == "saliency-checkpointed")

    def train():
        model.zero_grad(set_to_none=args.measure == "train")
        default_loss(model, batch).backward()

    if args.measure == "train-grads-ready":
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
    fn = saliency if args.measure.startswith("saliency") else train
    peak = peak_above_now(fn)  # cold: nothing of an earlier pass is cached
    times = [float("nan")]
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times[1:] or times), "peak_bytes": peak,
            "weight_grad_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
            "parameters": sum(p.numel() for p in model.parameters()), "targets": len(targets),
            "accumulator_bytes": sum(m.weight.numel() * 4 for m in targets.values())}


KINDS = ("saliency", "saliency-checkpointed", "train", "train-grads-ready")
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def run_child(args, kind: str, repeats: int, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, "--layers", str(args.layers), "--tokens", str(args.tokens),
           "--batch-size", str(args.batch_size), "--repeats", str(repeats),
           "--threads", str(torch.get_num_threads())] + (["--quick"] if args.quick else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and data: a smoke run")
    parser.add_argument("--layers", type=int, default=12, help="decoder blocks of the ~100M model (default 12)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each pass (median)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); on a shared, "
                        "oversubscribed machine 1 avoids OpenMP threads waiting on each other in GPTQ's column loop")
    parser.add_argument("--skip-quantize", action="store_true", help="only saliency vs training step")
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.samples, args.tokens = 8, 64
    if args.measure:
        print(json.dumps(measure(args)))
        return 0

    default = {kind: run_child(args, kind, 0 if kind == "train-grads-ready" else args.repeats, {}) for kind in KINDS}
    fixed = {kind: run_child(args, kind, 0, FIXED_MMAP_THRESHOLD) for kind in KINDS}
    sal, train = default["saliency"], default["train"]
    rows = ["| measure | saliency | training step | ratio | goal |", "|---|---|---|---|---|"]
    for kind, how in (("saliency", ""), ("saliency-checkpointed", ", saliency with activation checkpointing")):
        rows.append(f"| time per batch{how} | {default[kind]['seconds']:.2f} s | {train['seconds']:.2f} s | "
                    f"{default[kind]['seconds'] / train['seconds']:.2f}x | <= 2.5x |")
    for label, runs in (("glibc mmap threshold fixed at 64 KiB", fixed), ("glibc's default malloc", default)):
        ready_peak = runs["train-grads-ready"]["peak_bytes"]
        for kind, how in (("saliency", ""), ("saliency-checkpointed", "; saliency with activation checkpointing")):
            s_peak = runs[kind]["peak_bytes"]
            rows.append(f"| peak memory above the model, {label}{how} | {mib(s_peak)} (fp32 accumulators "
                        f"{mib(sal['accumulator_bytes'])}) | {mib(ready_peak)} without its weight gradients "
                        f"({mib(runs['train']['peak_bytes'])} when the step allocates its "
                        f"{mib(train['weight_grad_bytes'])} of them) | {s_peak / ready_peak:.2f}x | <= 1.3x |")
    setting = (f"Llama-shaped, {sal['parameters'] / 1e6:.1f}M parameters ({args.layers if not args.quick else 2} "
               f"blocks), {sal['targets']} target layers; batch {args.batch_size} x {args.tokens} tokens; "
               f"calibration {args.samples} x {args.tokens}; threads {torch.get_num_threads()}")
    print(setting + "\n" + "\n".join(rows))

    if not args.skip_quantize:
        cfg = model_config(args)
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg)
        calib = make_batches(cfg, args.samples, args.tokens, args.batch_size)
        t0 = time.perf_counter()
        report = tacq_ext.quantize_model(model, calib, tacq_ext.TACQConfig(bits=2, ratio=0.0035), progress=True)
        total = time.perf_counter() - t0
        rows += ["", "| quantize_model (tacq, 2-bit, ratio 0.0035) | seconds |", "|---|---|"]
        rows += [f"| {stage} | {seconds:.1f} |" for stage, seconds in report.stage_seconds.items()]
        rows += [f"| total | {total:.1f} |", "",
                 f"kept {report.kept} of {report.parameters} weights; avg bits {report.avg_bits:.3f}; "
                 f"process peak RSS {mib(report.peak_memory_bytes)}"]
        print("\n".join(rows[-len(report.stage_seconds) - 5:]))

    name = "cpu-method-quick" if args.quick else f"cpu-method-{args.layers}l-{args.samples}x{args.tokens}"
    command = "python bench/bench_method.py " + " ".join(argv if argv is not None else sys.argv[1:])
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = common.RESULTS_DIR / f"{name}.md"
    info = {**common.machine_info("cpu"), "load average (1, 5, 15 min) at the end": os.getloadavg()}
    out.write_text(f"# {name}\n\nCommand: `{command.strip()}`\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items())
                   + f"\n\n{setting}\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Calibration with offloaded decoder blocks against the model loaded whole:
quantize_model (tacq, 2-bit, ratio 0.0035) on bench_method.py's randomly
initialised ~125M-parameter Llama (12 blocks, hidden 768, MLP 2048, seed 0),
saved as safetensors; one process each, loaded with from_pretrained
("whole") or tacq_ext.load_offloaded ("offloaded"). Reports wall time per
stage, peak RSS, the most blocks resident at once, and whether both runs
wrote the same quantized model (a hash over every tensor of the result).

On a GPU the offloaded run keeps one block's weights and accumulators on the
device; on this CPU the device is host memory too, so peak RSS shows what
the offloaded run no longer holds: the whole model's block weights.

    python bench/offload_calib.py            # 8 x 256 tokens, batch 4
    python bench/offload_calib.py --quick    # tiny model, smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_method import make_batches, model_config  # noqa: E402

STAGES = ("saliency", "reference", "selection", "gptq")
MODES = ("whole", "offloaded")


def state_hash(model) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def worker(args) -> None:
    """One run (args.worker names the mode) on the model saved in args.dir; prints JSON."""
    import tacq_ext
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.worker == "offloaded":
        model = tacq_ext.load_offloaded(args.dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.dir, local_files_only=True).eval()
    offload = tacq_ext.offload.offload_of(model)
    load_s = time.perf_counter() - start
    batches = make_batches(model_config(args), args.samples, args.tokens, args.batch_size)
    start = time.perf_counter()
    report = tacq_ext.quantize_model(model, batches, tacq_ext.TACQConfig(bits=2, ratio=0.0035), progress=False)
    print(json.dumps({"mode": args.worker, "load_s": load_s, "total_s": time.perf_counter() - start,
                      "stages_s": {s: report.stage_seconds.get(s, 0.0) for s in STAGES},
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "peak_blocks": offload.peak_resident if offload else model.config.num_hidden_layers,
                      "kept": report.kept, "hash": state_hash(model)}))


def plot(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(8, 3.2))
    time_ax.bar(MODES, [runs[m]["total_s"] for m in MODES])
    time_ax.set_ylabel("quantize_model, s")
    rss_ax.bar(MODES, [runs[m]["peak_rss"] / 2**20 for m in MODES])
    rss_ax.set_ylabel("peak RSS, MiB")
    fig.suptitle("Offloaded blocks vs the whole model (tacq, 2-bit)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny 2-block model")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="offload-calib-cpu")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    runs = {}
    with tempfile.TemporaryDirectory() as saved:
        torch.manual_seed(0)
        LlamaForCausalLM(model_config(args)).save_pretrained(saved, max_shard_size="200MB")
        forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
        for mode in tqdm(MODES, desc="runs"):
            out = subprocess.run([sys.executable, __file__, *forwarded, "--worker", mode, "--dir", saved],
                                 check=True, capture_output=True, text=True).stdout
            runs[mode] = json.loads(out.strip().splitlines()[-1])

    same = runs["whole"]["hash"] == runs["offloaded"]["hash"]
    rows = ["| run | load s | saliency s | reference s | selection s | gptq s | quantize_model s | peak RSS MiB "
            "| blocks resident at most | kept |", "|---|" + "---|" * 9]
    for mode in MODES:
        r = runs[mode]
        rows.append(f"| {mode} | {r['load_s']:.1f} | " + " | ".join(f"{r['stages_s'][s]:.1f}" for s in STAGES)
                    + f" | {r['total_s']:.1f} | {r['peak_rss'] / 2**20:.0f} | {r['peak_blocks']} | {r['kept']} |")
    table = "\n".join(rows)
    notes = [f"model: {'tiny' if args.quick else f'llama-125m-random, {args.layers} blocks'}, "
             f"{args.samples} x {args.tokens} tokens, batch {args.batch_size}, {args.threads} threads",
             f"same quantized model (hash of every tensor): {'yes' if same else 'NO'}"]
    stem = common.write_table_results(args.name, common.command_line("offload_calib.py", argv), table, notes,
                                      {"runs": runs, "same_result": same})
    plot(runs, stem.with_suffix(".png"))
    print(table)
    print("\n".join(notes))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

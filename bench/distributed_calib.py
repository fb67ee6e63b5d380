"""Data-parallel calibration on the CPU: quantize_model (tacq, 2-bit, ratio
0.0035) with 1 process vs N processes under torchrun (gloo), 1 thread each,
on bench_method.py's randomly initialised ~125M-parameter Llama ("llama-125m-
random": 12 blocks, hidden 768, MLP 2048, vocab 32000, seed 0). Reports wall
time per stage (saliency is the gradient pass with its reduction), the
speed-ups, CPU time and peak RSS per rank (CPU time shows the work each rank
did whatever else the machine ran), and how many kept positions and packed
code words of the N-process run differ from the 1-process run's. Last, N
independent processes with no process group run only the gradient pass over
the same shares: the machine's own scaling, the ceiling for the saliency stage. Goals: saliency
>= 1.7x and the whole quantize_model >= 1.5x faster with 2 processes.

    python bench/distributed_calib.py                 # 16 x 256 tokens, batch 4, 1 vs 2 processes
    python bench/distributed_calib.py --quick         # tiny model, smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_method import make_batches, model_config  # noqa: E402

STAGES = ("saliency", "reference", "selection", "gptq")


def model_and_share(args, rank: int, world: int):
    """The bench model (seed 0) and rank's share of the calibration batches."""
    from transformers import LlamaForCausalLM

    cfg = model_config(args)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    return model, make_batches(cfg, args.samples, args.tokens, args.batch_size)[rank::world]


def worker(args) -> None:
    """One rank (torchrun sets RANK/WORLD_SIZE): its share of the batches."""
    import torch.distributed as dist

    import tacq_ext
    from tacq_ext.qlinear import QuantizedLinear

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    model, batches = model_and_share(args, rank, world)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before, start = usage.ru_utime + usage.ru_stime, time.perf_counter()
    report = tacq_ext.quantize_model(model, batches, tacq_ext.TACQConfig(bits=2, ratio=0.0035, method="tacq"))
    total = time.perf_counter() - start
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantizedLinear)}
    if rank == 0:  # every rank holds the same broadcast result
        np.savez(Path(args.worker).with_suffix(".npz"), **{
            f"{name}.kept": kept_positions(m) for name, m in layers.items()},
            **{f"{name}.packed": m.packed.numpy() for name, m in layers.items()})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    mine = {"rank": rank, "batches": len(batches), "peak_rss": usage.ru_maxrss * 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before}
    ranks = [mine]
    if world > 1:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    if rank == 0:
        stages = {s: report.stage_seconds.get(s, 0.0) for s in STAGES}
        Path(args.worker).write_text(json.dumps({
            "processes": world, "total_s": total, "stages_s": stages, "kept": report.kept, "ranks": ranks}))
    if world > 1:
        dist.destroy_process_group()


def kept_positions(layer) -> np.ndarray:
    """Flat indices n*K + k of a quantized layer's kept weights (its CSR)."""
    rows = np.repeat(np.arange(layer.out_features), np.diff(layer.row_ptr.numpy()))
    return rows.astype(np.int64) * layer.in_features + layer.col_idx.numpy()


def compare(one: Path, many: Path) -> dict:
    """How far the N-process checkpoint is from the 1-process one."""
    a, b = np.load(one), np.load(many)
    layers = sorted(k[: -len(".kept")] for k in a.files if k.endswith(".kept"))
    kept_diff = sum(np.setxor1d(a[f"{n}.kept"], b[f"{n}.kept"]).size for n in layers)
    words = [(a[f"{n}.packed"] != b[f"{n}.packed"]).sum() for n in layers]
    return {"layers": len(layers), "kept_positions_differing": int(kept_diff),
            "layers_with_different_codes": int(sum(w > 0 for w in words)),
            "packed_words_differing": int(sum(words)), "packed_words": int(sum(a[f"{n}.packed"].size for n in layers))}


def independent_worker(args) -> None:
    """One of N processes that run only the gradient pass over their share of
    the batches, with no process group: what N ranks would take if
    communication cost nothing, so the machine's own scaling shows."""
    from tacq_ext.pipeline import find_targets
    from tacq_ext.saliency import accumulate_gradient_stats

    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    model, batches = model_and_share(args, rank, world)
    start = time.perf_counter()
    accumulate_gradient_stats(model, batches, find_targets(model, None), progress=False)
    Path(f"{args.independent}.{rank}").write_text(json.dumps({"saliency_s": time.perf_counter() - start}))


def launch(args, processes: int, out: Path, role: str = "--worker") -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           __file__, role, str(out), "--samples", str(args.samples), "--tokens", str(args.tokens),
           "--batch-size", str(args.batch_size)] + (["--quick"] if args.quick else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env)


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model and data: a smoke run")
    parser.add_argument("--layers", type=int, default=12, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--independent", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.independent:
        independent_worker(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for n in (1, args.processes):
            launch(args, n, Path(tmp) / f"{n}.json")
            runs.append(json.loads((Path(tmp) / f"{n}.json").read_text()))
        launch(args, args.processes, Path(tmp) / "independent", "--independent")
        independent_s = max(json.loads((Path(tmp) / f"independent.{r}").read_text())["saliency_s"]
                            for r in range(args.processes))
        diff = compare(Path(tmp) / "1.npz", Path(tmp) / f"{args.processes}.npz")
    one, many = runs
    speedup = {s: one["stages_s"][s] / many["stages_s"][s] for s in STAGES if many["stages_s"][s] > 0}
    speedup["total"] = one["total_s"] / many["total_s"]
    name = "distributed-cpu" if not args.quick else "distributed-cpu-quick"
    command = "python bench/distributed_calib.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = common.machine_info("cpu")
    info["threads"] = 1
    result = {"name": name, "command": command, "machine": info, "model": "llama-125m-random" if not args.quick
              else "tiny", "calibration": f"{args.samples} x {args.tokens} tokens, batch {args.batch_size}",
              "runs": runs, "speedup": speedup, "difference": diff,
              "independent_saliency_s": independent_s,
              "goals": {"saliency": 1.7, "total": 1.5}}
    common.RESULTS_DIR.mkdir(exist_ok=True)
    (common.RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# {name}", "", f"Command: `{command}`", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", f"Model {result['model']}; calibration {result['calibration']}; quantize_model tacq, 2-bit, "
              f"ratio 0.0035; gloo, 1 thread per process.", "",
              f"| stage | 1 process | {args.processes} processes | speed-up | goal |", "|---|---|---|---|---|"]
    for s in STAGES + ("total",):
        t1 = one["total_s"] if s == "total" else one["stages_s"][s]
        tn = many["total_s"] if s == "total" else many["stages_s"][s]
        goal = {"saliency": ">= 1.7x", "total": ">= 1.5x"}.get(s, "")
        lines.append(f"| {s} | {t1:.1f} s | {tn:.1f} s | {speedup.get(s, float('nan')):.2f}x | {goal} |")
    lines += ["", f"The gradient pass alone, run by {args.processes} independent processes over the same shares "
              f"with no process group (what the ranks would take if communication cost nothing): "
              f"{independent_s:.1f} s, a speed-up of {one['stages_s']['saliency'] / independent_s:.2f}x: the "
              "machine's own scaling, the ceiling for the saliency stage."]
    lines += ["", "| run | rank | batches | CPU time of quantize_model | peak RSS |", "|---|---|---|---|---|"]
    for run in runs:
        for r in run["ranks"]:
            lines.append(f"| {run['processes']} process(es) | {r['rank']} | {r['batches']} | {r['cpu_s']:.1f} s | "
                         f"{mib(r['peak_rss'])} |")
    lines += ["", f"kept {one['kept']} weights with 1 process, {many['kept']} with {args.processes}; "
              f"kept positions in one run and not the other: {diff['kept_positions_differing']}; layers whose "
              f"codes differ: {diff['layers_with_different_codes']} of {diff['layers']} "
              f"({diff['packed_words_differing']} of {diff['packed_words']} packed words)"]
    (common.RESULTS_DIR / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

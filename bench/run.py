"""Runs the kernel benchmarks of one device and prints ONE table (op, shape,
bits, batch, our time, baseline times, speedups, GB/s, % of the measured
bandwidth), then writes it with the machine facts to bench/results/.

    python bench/run.py --device cpu            # full CPU run (the shapes of docs/benchmarks.md)
    python bench/run.py --device cuda           # on the GPU machine
    python bench/run.py --device cpu --quick    # smoke run, small shapes
    python bench/run.py --plot bench/results/cuda-kernels.json   # the plot of a run made without matplotlib
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODULES = {"cpu": ["cpu_gemv", "cpu_quant"], "cuda": ["gpu_gemv", "gpu_quant"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small shapes, for smoke testing")
    parser.add_argument("--only", default="", help="comma-separated bench modules to run")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--name", default=None, help="results file stem (default: <device>-kernels)")
    parser.add_argument("--plot", metavar="JSON", default=None,
                        help="only draw the plot of results written earlier (bench/results/<name>.json)")
    args = parser.parse_args(argv)
    if args.plot:
        print(f"wrote {common.plot_results(Path(args.plot))}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")

    import tacq_ext  # noqa: F401  (registers the ops)

    if args.threads:
        torch.set_num_threads(args.threads)

    names = [n for n in MODULES[args.device] if not args.only or n in args.only.split(",")]
    if not names:
        parser.error(f"--only {args.only!r} names none of the {args.device} benchmarks {MODULES[args.device]}")
    load = os.getloadavg()[0]
    if args.device == "cpu" and load > 0.5:
        print(f"warning: 1-minute load average {load:.1f}: other work skews CPU timings", flush=True)
    bandwidth = common.measure_read_bandwidth(args.device)
    print(f"measured bandwidth reference: {bandwidth / 1e9:.1f} GB/s", flush=True)
    stem = args.name or f"{args.device}-kernels{'-quick' if args.quick else ''}"
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    rows = []
    for name in names:
        module = importlib.import_module(name)
        rows += module.rows(args.device, args.quick)
        # after each module, so that a run cut short (a time limit) keeps what it measured
        path = common.write_results(stem, rows, args.device, bandwidth, command)
    print(common.format_table(rows, bandwidth))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

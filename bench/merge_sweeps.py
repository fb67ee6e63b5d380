"""Joins the sweep.json files of several `tacq sweep` runs on the same model and
evaluation (e.g. one per recipe) into one frontier: sweep.md, sweep.json and
pareto.png with the Pareto front over all their points.

    python bench/merge_sweeps.py --out bench/results/sweep_demo/all bench/results/sweep_demo/{paper,act_order,budget}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tacq_ext.sweep import SweepPoint, mark_pareto
from tacq_ext.sweep_report import write_sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="folders holding a sweep.json")
    p.add_argument("--out", required=True, help="folder for the joined sweep.md, sweep.json, pareto.png")
    args = p.parse_args(argv)
    runs = [json.loads((Path(r) / "sweep.json").read_text()) for r in args.runs]
    metric, higher = runs[0]["metric"], runs[0]["higher_is_better"]
    for r, data in zip(args.runs, runs):
        if (data["metric"], data["higher_is_better"], data["eval"]) != (metric, higher, runs[0]["eval"]):
            raise SystemExit(f"{r}: another metric or evaluation than {args.runs[0]}; only like runs join")
    points = [SweepPoint(**{**p, "pareto": False}) for p in runs[0]["points"] if not p["bits"]]
    points += [SweepPoint(**{**p, "pareto": False}) for data in runs for p in data["points"] if p["bits"]]
    mark_pareto(points, metric, higher)
    meta = {k: runs[0][k] for k in ("model", "calib", "eval", "commit") if k in runs[0]}
    meta["runs"] = [str(r) for r in args.runs]
    for path in write_sweep(points, args.out, metric, higher, meta):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

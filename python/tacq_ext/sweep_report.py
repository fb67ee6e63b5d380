"""A sweep's outputs: a markdown table, a JSON file and (with matplotlib) a
plot of the metric against average stored bits with the Pareto front."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import List

from .sweep import SweepPoint


def _group(p: SweepPoint) -> str:
    return "-" if not p.bits else "row" if p.group_size == -1 else str(p.group_size)


def markdown_table(points: List[SweepPoint], metrics: List[str]) -> str:
    """One row per point, fewest average bits first (the unquantized model
    last); `*` marks the Pareto front."""
    order = sorted(points, key=lambda p: (not p.bits, p.avg_bits))
    head = ["method", "recipe", "bits", "group", "ratio", "wide rows", "avg bits", "kept"] + metrics + [
        "quant s", "front"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in order:
        cells = [p.method, p.recipe, str(p.bits or "-"), _group(p), f"{p.ratio:g}", f"{p.wide_rows:g}",
                 f"{p.avg_bits:.3f}",
                 str(p.kept)] + [f"{p.metrics[m]:.4g}" for m in metrics] + [f"{p.seconds:.1f}",
                                                                           "*" if p.pareto else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_frontier(points: List[SweepPoint], metric: str, path, log_scale: bool = False) -> Path:
    """metric vs average bits, one marker series per (method, recipe, wide rows or not), the
    Pareto front as a line and the unquantized model as a dashed line;
    log_scale: a logarithmic metric axis (losses spanning decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    quantized = [p for p in points if p.bits]
    series = dict.fromkeys((p.method, p.recipe, p.wide_rows > 0) for p in quantized)
    colors, markers = plt.get_cmap("tab10").colors, "o^sD"  # past 10 series, the colors come back with another marker
    for i, (method, recipe, wide) in enumerate(series):
        chosen = [p for p in quantized if (p.method, p.recipe, p.wide_rows > 0) == (method, recipe, wide)]
        options = [r for r in (recipe if recipe != "paper" else "", "wide rows" if wide else "") if r]
        label = method + (f" ({', '.join(options)})" if options else "")
        ax.scatter([p.avg_bits for p in chosen], [p.metrics[metric] for p in chosen], label=label, s=18,
                   color=colors[i % 10], marker=markers[i // 10 % len(markers)])
    front = sorted((p.avg_bits, p.metrics[metric]) for p in quantized if p.pareto)
    if front:
        ax.step(*zip(*front), where="post", color="black", linewidth=1, label="Pareto front")
    for p in points:
        if not p.bits:
            ax.axhline(p.metrics[metric], color="gray", linestyle="--", label="unquantized")
    ax.set_xlabel("average stored bits per weight")
    ax.set_ylabel(metric)
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_sweep(points: List[SweepPoint], out_dir, metric: str, higher_is_better: bool, meta: dict) -> List[Path]:
    """sweep.md, sweep.json and, if matplotlib is installed, pareto.png in
    out_dir; prints why there is no plot otherwise."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = list(points[0].metrics)
    (out / "sweep.md").write_text(markdown_table(points, metrics) + "\n")
    (out / "sweep.json").write_text(json.dumps({**meta, "metric": metric, "higher_is_better": higher_is_better,
                                                "points": [asdict(p) for p in points]}, indent=1) + "\n")
    written = [out / "sweep.md", out / "sweep.json"]
    try:
        positive = all(p.metrics[metric] > 0 for p in points)
        written.append(plot_frontier(points, metric, out / "pareto.png", log_scale=positive and not higher_is_better))
    except ModuleNotFoundError as e:
        print(f"no Pareto plot: {e.name} is not installed (pip install 'tacq_ext[plot]')")
    return written

"""The demo's PNG: accuracy vs average bits, one line per method, one panel
per (calibration task, evaluated task); full precision as a dashed line."""

from __future__ import annotations

from pathlib import Path
from typing import List

from .grid import Row


def plot_accuracy(rows: List[Row], eval_tasks: List[str], path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp = next(r for r in rows if r.method == "fp32")
    quantized = [r for r in rows if r.method != "fp32"]
    calib_tasks = sorted({r.calib for r in quantized})
    methods = list(dict.fromkeys(r.method for r in quantized))
    fig, axes = plt.subplots(len(calib_tasks), len(eval_tasks), squeeze=False,
                             figsize=(4 * len(eval_tasks), 3.2 * len(calib_tasks)))
    for i, calib in enumerate(calib_tasks):
        for j, task in enumerate(eval_tasks):
            ax = axes[i][j]
            for method in methods:
                points = sorted((r.avg_bits, 100 * r.accuracy[task]) for r in quantized
                                if r.calib == calib and r.method == method)
                ax.plot(*zip(*points), marker="o", label=method)
            ax.axhline(100 * fp.accuracy[task], color="gray", linestyle="--", label="fp32")
            ax.set_title(f"{task} (calibrated on {calib})", fontsize=9)
            ax.set_xlabel("average bits per weight")
            ax.set_ylabel("accuracy %")
            ax.set_ylim(-2, 102)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Shared benchmark plumbing (docs/benchmarks.md): timers, the memory-bandwidth
reference, weight cycling past the last-level cache, and the result table.

Every figure is a median over repetitions (on CPU, for streamed weights, also
over fresh allocations of the weight stack), compared with baselines timed in
the same run; bandwidth is bytes the kernel must read (and write, where stated)
divided by time, also shown as a percentage of the measured machine limit.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHECKOUT_PACKAGE = Path(__file__).resolve().parent.parent / "python" / "tacq_ext"


def measured_package() -> Optional[Path]:
    """The directory of the tacq_ext this process imports: what a bench run
    measures, recorded with its results. Refuses when this checkout holds a
    build of its own (scripts/dev_build.sh) and the import finds an installed
    one (an older pip install) instead: a run would silently time stale
    kernels. (A build elsewhere put first on PYTHONPATH, for an A/B, is taken.)
    Child processes inherit the environment, so they import the same one."""
    try:
        import tacq_ext
    except ImportError:
        return None
    package = Path(tacq_ext.__file__).resolve().parent
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if package.parent in installed and any(CHECKOUT_PACKAGE.glob("_C*")):
        raise SystemExit(f"this checkout has its own build in {CHECKOUT_PACKAGE}, but `import tacq_ext` finds "
                         f"{package}; run with PYTHONPATH={CHECKOUT_PACKAGE.parent} to measure the checkout, "
                         "or reinstall it")
    return package


MEASURED_PACKAGE = measured_package()


# ---------------------------------------------------------------- timing


def time_cpu(fn: Callable[[], object], reps: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn() in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean wall time of `calls` back-to-back fn() after one warm-up call, in
    seconds: for alternating rounds of two contenders, each keeping its fastest."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_streamed_cpu(make_run: Callable[[], Callable[[], object]], reps: int, allocations: int = 3) -> float:
    """Median over `allocations` fresh weight stacks of time_cpu(make_run()).
    How fast a stack streams can depend on where its pages landed (on the
    2-vCPU dev VM a stack sometimes ran at ~0.6x for all its calls), so one
    draw could decide whether a goal looked met. make_run() builds the stack
    (a Cycler) and returns the call to time; each stack is freed before the
    next is built."""
    times = []
    for _ in range(allocations):
        run = make_run()
        times.append(time_cpu(run, reps=reps))
        del run
        gc.collect()
    return statistics.median(times)


def time_cuda(fn: Callable[[], object], reps: int = 50, warmup: int = 10) -> float:
    """Median time of fn() in seconds, from CUDA events around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3)
    return statistics.median(samples)


def timer_for(device: str) -> Callable[..., float]:
    return time_cuda if device.startswith("cuda") else time_cpu


# ---------------------------------------------------------------- cache-busting


def last_level_cache_bytes() -> int:
    """Largest CPU cache reported by sysfs (bytes); 64 MiB if unknown."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        value = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        best = max(best, value)
    return best or (64 << 20)


def cycle_bytes(device: str) -> int:
    """Total size a stack of distinct weights must exceed so that timings stream
    from memory: 64 MB (CPU) / 256 MB (GPU), raised to four times
    the last-level cache where that is larger (some VMs report a 480 MiB L3; on
    the 32 MiB-L3 dev VM a 64 MiB stack still left enough of itself in L3 to
    flatter read rates)."""
    if device.startswith("cuda"):
        l2 = torch.cuda.get_device_properties(device).L2_cache_size
        return max(256 << 20, 4 * l2)
    return max(64 << 20, 4 * last_level_cache_bytes())


class Cycler:
    """Holds `copies` distinct argument sets and returns the next one on each
    call, so consecutive calls never find their weights in cache."""

    def __init__(self, make: Callable[[int], tuple], bytes_per_copy: int, device: str):
        self.copies = max(2, -(-cycle_bytes(device) // max(bytes_per_copy, 1)))
        self.sets = [make(i) for i in range(self.copies)]
        self.i = 0

    def next(self) -> tuple:
        self.i = (self.i + 1) % self.copies
        return self.sets[self.i]


# ---------------------------------------------------------------- bandwidth reference


def measure_read_bandwidth(device: str) -> float:
    """Bytes/s the machine sustains. CPU: a full-thread read (sum) of a buffer
    past the LLC, median over fresh buffers (time_streamed_cpu); GPU:
    device-to-device copy (bytes read + written)."""
    if device.startswith("cuda"):
        n = (1 << 30) // 4
        a = torch.empty(n, dtype=torch.float32, device=device)
        b = torch.empty_like(a)
        t = time_cuda(lambda: b.copy_(a), reps=20, warmup=5)
        return 2 * a.numel() * 4 / t
    n = cycle_bytes("cpu") // 4

    def make_sum():
        a = torch.ones(n, dtype=torch.float32)
        return lambda: a.sum()

    return n * 4 / time_streamed_cpu(make_sum, reps=5)


# ---------------------------------------------------------------- results


@dataclass
class Row:
    """One benchmark line: our time, baselines (name -> seconds), and the bytes
    our kernel must move, from which GB/s and % of the measured limit follow."""

    op: str
    shape: str
    bits: Optional[int]
    batch: Optional[int]
    ours_s: float
    baselines_s: Dict[str, float] = field(default_factory=dict)
    bytes_moved: Optional[int] = None
    note: str = ""

    def speedups(self) -> Dict[str, float]:
        return {name: t / self.ours_s for name, t in self.baselines_s.items()}


def machine_info(device: str) -> dict:
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        # other work on the machine skews CPU timings: 1-minute load when written
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, cuda=torch.version.cuda, driver=_nvidia_driver())
    if MEASURED_PACKAGE is not None:
        import tacq_ext

        info["tacq_ext"] = {**tacq_ext.build_info(), "imported_from": str(MEASURED_PACKAGE)}
    return info


def format_table(rows: List[Row], bandwidth: float) -> str:
    names = sorted({n for r in rows for n in r.baselines_s})
    head = ["op", "shape", "bits", "batch", "ours ms"] + [f"{n} ms" for n in names]
    head += [f"x vs {n}" for n in names] + ["GB/s", "% bw", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        sp = r.speedups()
        cells = [r.op, r.shape, str(r.bits or ""), str(r.batch or ""), f"{r.ours_s * 1e3:.3f}"]
        cells += [f"{r.baselines_s[n] * 1e3:.3f}" if n in r.baselines_s else "" for n in names]
        cells += [f"{sp[n]:.2f}" if n in sp else "" for n in names]
        if r.bytes_moved:
            gbps = r.bytes_moved / r.ours_s / 1e9
            cells += [f"{gbps:.1f}", f"{100 * gbps * 1e9 / bandwidth:.0f}"]
        else:
            cells += ["", ""]
        cells.append(r.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(name: str, rows: List[Row], device: str, bandwidth: float, command: str) -> Path:
    """Writes bench/results/<name>.md (table + machine), <name>.json and the
    speedup plot <name>.png."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    info = machine_info(device)
    table = format_table(rows, bandwidth)
    md = [f"# {name}", "", f"Command: `{command}`", ""]
    md += [f"- {k}: {v}" for k, v in info.items()]
    md += [f"- measured bandwidth reference: {bandwidth / 1e9:.1f} GB/s", "", table, ""]
    path = RESULTS_DIR / f"{name}.md"
    path.write_text("\n".join(md))
    payload = {"machine": info, "bandwidth_Bps": bandwidth, "command": command,
               "rows": [asdict(r) for r in rows]}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(payload, indent=1))
    try:
        plot_speedups(rows, RESULTS_DIR / f"{name}.png", plot_title(name, info))
    except ModuleNotFoundError as e:  # a machine without matplotlib (the lent GPU image): plot later
        print(f"no plot: {e.name} is not installed; on a machine with it: "
              f"python bench/run.py --plot bench/results/{name}.json")
    return path


def plot_title(name: str, info: dict) -> str:
    return f"{name} ({info['commit']}, {info.get('gpu', info['cpu'])})"


def plot_results(json_path: Path) -> Path:
    """The speedup plot <name>.png beside a <name>.json that write_results wrote."""
    payload = json.loads(Path(json_path).read_text())
    png = Path(json_path).with_suffix(".png")
    plot_speedups([Row(**row) for row in payload["rows"]], png, plot_title(png.stem, payload["machine"]))
    return png


def command_line(script: str, argv: Optional[List[str]]) -> str:
    """How bench/<script> was invoked, for the results files."""
    return f"python bench/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def write_table_results(name: str, command: str, table: str, notes: List[str], payload: dict,
                        device: str = "cpu") -> Path:
    """bench/results/<name>.md (title, command, machine, a line per note, the
    table) and <name>.json (machine, command, payload); returns the path
    without suffix, for the caller's plot."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    info = machine_info(device)
    md = [f"# {name}", "", f"- command: `{command}`"] + [f"- {k}: {v}" for k, v in info.items()]
    md += [f"- {note}" for note in notes] + ["", table, ""]
    stem = RESULTS_DIR / name
    stem.with_suffix(".md").write_text("\n".join(md))
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "command": command, **payload}, indent=1))
    return stem


def plot_speedups(rows: List[Row], path: Path, title: str) -> None:
    """Bar chart of each row's speedup over each baseline (log scale, 1x marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baselines = sorted({b for r in rows for b in r.baselines_s})
    per_row = max(len(r.baselines_s) for r in rows)
    height = 0.8 / per_row
    labels = [" ".join(str(v) for v in (r.op, r.shape, f"{r.bits}b" if r.bits else "", f"M{r.batch}" if r.batch else "",
                                          r.note.split(";")[0])) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    for name in baselines:
        ys, xs = [], []
        for j, r in enumerate(rows):
            if name in r.baselines_s:
                ys.append(j + sorted(r.baselines_s).index(name) * height)
                xs.append(r.speedups()[name])
        ax.barh(ys, xs, height, label=f"vs {name}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([j + (len(r.baselines_s) - 1) * height / 2 for j, r in enumerate(rows)], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup (baseline time / our time, same run)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(values: Dict[str, float], path: Path, ylabel: str, title: str) -> None:
    """One bar per label, labels slanted under the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(values)), list(values.values()))
    ax.set_xticks(range(len(values)), list(values), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor()


def _nvidia_driver() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"

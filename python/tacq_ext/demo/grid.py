"""The demo's experiment: for each calibration task, bit width (and group
size), method and calibration seed, quantize a copy of the full-precision
model, evaluate it on every task, and measure its size and decoding speed;
seeds are summarized as mean and standard deviation."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Tuple

from tqdm.auto import tqdm

from .. import TACQConfig, compute_saliency, quantize_model
from ..calib_data import make_batches
from ..report import QuantizationReport
from ..saliency import accumulate_gradient_stats
from ..targets import find_targets
from .evaluate import task_accuracy
from .measure import decode_speed_against, decode_tokens_per_second, stored_megabytes
from .tasks import TEST_SEED, get_task, load_split
from .tokenizer import EOS


@dataclass
class GridSettings:
    calib_tasks: List[str]
    methods: List[str]
    bits: List[int]
    eval_tasks: List[str]
    limit: int = 100          # test examples per task, at most (sql has 309)
    calib_size: int = 64      # calibration examples
    calib_batch_size: int = 8
    ratio: float = 0.0035
    group_size: int = 64
    speed_prompts: int = 4    # prompts for the tokens/s measurement
    speed_rounds: int = 5     # its rounds over the prompts (alternating with fp32's), medians reported
    per_row_bits: List[int] = field(default_factory=list)  # also run these bit widths with per-row scales
    seeds: List[int] = field(default_factory=lambda: [TEST_SEED])  # calibration sample seeds

    def __post_init__(self):
        for name in self.calib_tasks + self.eval_tasks:
            get_task(name)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for b in self.bits + self.per_row_bits:
            if b not in (2, 3, 4):
                raise ValueError(f"bits must be 2, 3 or 4, got {b}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        for name in ("limit", "calib_size", "calib_batch_size", "speed_prompts", "speed_rounds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class Row:
    calib: str                # calibration task, "-" for full precision
    method: str
    bits: int
    avg_bits: float
    size_mb: float
    accuracy: Dict[str, float]
    quant_seconds: float
    tokens_per_second: float
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    group_size: int = 64
    accuracy_sd: Dict[str, float] = field(default_factory=dict)  # over calibration seeds (0 for one)
    seeds: int = 1
    speed_vs_fp32: float = 1.0  # median ratio of decoding rounds alternating with the fp32 model


class _ScoreCache:
    """Scores shared between runs where they are identical: the squeezellm_like
    Fisher sum_s G_s^2 depends only on the full-precision model and the
    calibration data, so it is computed once per calibration task. TACQ's
    scores use the reference Q(W) at the target bit width and spqr_like's are
    computed inside quantize_model, so those are never shared across bits."""

    def __init__(self):
        self._fisher: Dict[tuple, Tuple[dict, float]] = {}

    def scores_for(self, model, calib, calib_task: tuple, cfg: TACQConfig, progress: bool):
        """(scores or None, seconds spent computing them); calib_task names
        the calibration sample (task, seed)."""
        if cfg.method == "tacq":
            start = time.perf_counter()
            return compute_saliency(model, calib, cfg, progress=progress), time.perf_counter() - start
        if cfg.method == "squeezellm_like":
            if calib_task not in self._fisher:
                start = time.perf_counter()
                fisher = accumulate_gradient_stats(model, calib, find_targets(model), squared=True, progress=progress)
                self._fisher[calib_task] = fisher, time.perf_counter() - start
            return self._fisher[calib_task]
        return None, 0.0


def _evaluate(model, tokenizer, settings: GridSettings, test_sets, progress: bool,
              fp32_model=None) -> Tuple[dict, float, float]:
    """Accuracy per task, decoding tokens/s, and the speed relative to
    `fp32_model` (rounds alternating with it; 1 without it)."""
    accuracy = {name: task_accuracy(model, tokenizer, get_task(name), test_sets[name], progress=progress)
                for name in settings.eval_tasks}
    speed_prompts = [ex.prompt for ex in test_sets[settings.eval_tasks[0]][: settings.speed_prompts]]
    if fp32_model is None:
        return accuracy, decode_tokens_per_second(model, tokenizer, speed_prompts, rounds=settings.speed_rounds), 1.0
    return (accuracy, *decode_speed_against(model, fp32_model, tokenizer, speed_prompts, rounds=settings.speed_rounds))


class _SeedRun(NamedTuple):
    """One calibration seed's quantized model, as measured."""
    report: QuantizationReport
    size_mb: float
    accuracy: Dict[str, float]
    quant_seconds: float
    tokens_per_second: float
    score_seconds: float
    speed_vs_fp32: float


def _summary(values: List[float]) -> Tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_grid(model, tokenizer, settings: GridSettings, progress: bool = True) -> List[Row]:
    """The full-precision row first, then one row per (calibration task,
    bits and group size, method), averaged over the calibration seeds.
    `model` is left unchanged."""
    test_sets = {name: load_split(name, "test", settings.limit, at_most=True) for name in settings.eval_tasks}
    accuracy, speed, _ = _evaluate(model, tokenizer, settings, test_sets, progress)
    rows = [Row("-", "fp32", 32, 32.0, stored_megabytes(model), accuracy, 0.0, speed, group_size=0)]
    cache = _ScoreCache()
    regimes = [(b, settings.group_size) for b in settings.bits] + [(b, -1) for b in settings.per_row_bits]
    runs = [(c, r, m) for c in settings.calib_tasks for r in regimes for m in settings.methods]
    bar = tqdm(total=len(runs) * len(settings.seeds), desc="demo grid", disable=not progress)
    for calib_task, (bits, group_size), method in runs:
        cfg = TACQConfig(bits=bits, group_size=group_size, ratio=settings.ratio, method=method)
        per_seed = []
        for seed in settings.seeds:
            calib = make_batches(load_split(calib_task, "calib", settings.calib_size, seed), tokenizer,
                                 settings.calib_batch_size, eos_token_id=EOS)
            scores, score_seconds = cache.scores_for(model, calib, (calib_task, seed), cfg, progress=False)
            quantized = copy.deepcopy(model)
            start = time.perf_counter()
            report = quantize_model(quantized, calib, cfg, scores=scores, progress=False)
            quant_seconds = time.perf_counter() - start + score_seconds
            accuracy, speed, vs_fp32 = _evaluate(quantized, tokenizer, settings, test_sets, progress, model)
            per_seed.append(_SeedRun(report, stored_megabytes(quantized), accuracy, quant_seconds, speed,
                                     score_seconds, vs_fp32))
            bar.update()
        last = per_seed[-1]
        summaries = {t: _summary([run.accuracy[t] for run in per_seed]) for t in settings.eval_tasks}
        rows.append(Row(calib_task, method, bits, last.report.avg_bits, last.size_mb,
                        {t: m for t, (m, _) in summaries.items()},
                        statistics.fmean(run.quant_seconds for run in per_seed),
                        statistics.fmean(run.tokens_per_second for run in per_seed),
                        dict(last.report.stage_seconds, scores=last.score_seconds), group_size,
                        {t: sd for t, (_, sd) in summaries.items()}, len(per_seed),
                        statistics.fmean(run.speed_vs_fp32 for run in per_seed)))
        tqdm.write(format_row(rows[-1], settings.eval_tasks)) if progress else None
    bar.close()
    return rows


def _accuracy_cell(row: Row, task: str, with_sd: bool) -> str:
    if not with_sd:
        return f"{100 * row.accuracy[task]:>6.1f}"
    if row.seeds == 1:
        return f"{100 * row.accuracy[task]:>5.1f}     "
    return f"{100 * row.accuracy[task]:>5.1f}±{100 * row.accuracy_sd.get(task, 0.0):<4.1f}"


def format_row(row: Row, tasks: List[str], with_sd: bool = False) -> str:
    accuracy = " ".join(_accuracy_cell(row, t, with_sd) for t in tasks)
    group = "-" if row.method == "fp32" else "row" if row.group_size == -1 else str(row.group_size)
    return (f"{row.calib:<6} {row.method:<16} {row.bits:>4} {group:>5} {row.avg_bits:>8.3f} {row.size_mb:>7.3f} "
            f"{accuracy} {row.quant_seconds:>8.1f} {row.tokens_per_second:>7.1f} {row.speed_vs_fp32:>6.2f}x")


def format_table(rows: List[Row], tasks: List[str]) -> str:
    """Accuracy in %, as mean±sd over calibration seeds when there are several."""
    with_sd = any(r.seeds > 1 for r in rows)
    width = 10 if with_sd else 6
    header = (f"{'calib':<6} {'method':<16} {'bits':>4} {'group':>5} {'avg bits':>8} {'size MB':>7} "
              + " ".join(f"{t:>{width}}" for t in tasks) + f" {'quant s':>8} {'tok/s':>7} {'vs fp32':>7}")
    return "\n".join([header, "-" * len(header)] + [format_row(r, tasks, with_sd) for r in rows])

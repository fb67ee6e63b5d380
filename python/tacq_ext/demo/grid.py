"""The demo's experiment: for each calibration task, method and bit width,
quantize a copy of the full-precision model, evaluate it on every task, and
measure its size and decoding speed."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from tqdm.auto import tqdm

from .. import TACQConfig, compute_saliency, quantize_model
from ..calib_data import make_batches
from ..saliency import accumulate_gradient_stats
from ..targets import find_targets
from .evaluate import task_accuracy
from .measure import decode_tokens_per_second, stored_megabytes
from .tasks import get_task, load_split
from .tokenizer import EOS


@dataclass
class GridSettings:
    calib_tasks: List[str]
    methods: List[str]
    bits: List[int]
    eval_tasks: List[str]
    limit: int = 100          # test examples per task
    calib_size: int = 64      # calibration examples
    calib_batch_size: int = 8
    ratio: float = 0.0035
    group_size: int = 64
    speed_prompts: int = 4    # prompts for the tokens/s measurement

    def __post_init__(self):
        for name in self.calib_tasks + self.eval_tasks:
            get_task(name)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for b in self.bits:
            if b not in (2, 3, 4):
                raise ValueError(f"bits must be 2, 3 or 4, got {b}")
        for name in ("limit", "calib_size", "calib_batch_size", "speed_prompts"):
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


class _ScoreCache:
    """Scores shared between runs where they are identical: the squeezellm_like
    Fisher sum_s G_s^2 depends only on the full-precision model and the
    calibration data, so it is computed once per calibration task. TACQ's
    scores use the reference Q(W) at the target bit width and spqr_like's are
    computed inside quantize_model, so those are never shared across bits."""

    def __init__(self):
        self._fisher: Dict[str, Tuple[dict, float]] = {}

    def scores_for(self, model, calib, calib_task: str, cfg: TACQConfig, progress: bool):
        """(scores or None, seconds spent computing them)."""
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


def _evaluate(model, tokenizer, settings: GridSettings, test_sets, progress: bool) -> Tuple[dict, float]:
    accuracy = {name: task_accuracy(model, tokenizer, get_task(name), test_sets[name], progress=progress)
                for name in settings.eval_tasks}
    speed_prompts = [ex.prompt for ex in test_sets[settings.eval_tasks[0]][: settings.speed_prompts]]
    return accuracy, decode_tokens_per_second(model, tokenizer, speed_prompts)


def run_grid(model, tokenizer, settings: GridSettings, progress: bool = True) -> List[Row]:
    """The full-precision row first, then one row per (calibration task,
    bits, method). `model` is left unchanged."""
    test_sets = {name: load_split(name, "test", settings.limit) for name in settings.eval_tasks}
    accuracy, speed = _evaluate(model, tokenizer, settings, test_sets, progress)
    rows = [Row("-", "fp32", 32, 32.0, stored_megabytes(model), accuracy, 0.0, speed)]
    cache = _ScoreCache()
    runs = [(c, b, m) for c in settings.calib_tasks for b in settings.bits for m in settings.methods]
    for calib_task, bits, method in tqdm(runs, desc="demo grid", disable=not progress):
        calib = make_batches(load_split(calib_task, "calib", settings.calib_size), tokenizer,
                             settings.calib_batch_size, eos_token_id=EOS)
        cfg = TACQConfig(bits=bits, group_size=settings.group_size, ratio=settings.ratio, method=method)
        scores, score_seconds = cache.scores_for(model, calib, calib_task, cfg, progress=False)
        quantized = copy.deepcopy(model)
        start = time.perf_counter()
        report = quantize_model(quantized, calib, cfg, scores=scores, progress=False)
        quant_seconds = time.perf_counter() - start + score_seconds
        accuracy, speed = _evaluate(quantized, tokenizer, settings, test_sets, progress)
        rows.append(Row(calib_task, method, bits, report.avg_bits, stored_megabytes(quantized), accuracy,
                        quant_seconds, speed, dict(report.stage_seconds, scores=score_seconds)))
        tqdm.write(format_row(rows[-1], settings.eval_tasks)) if progress else None
    return rows


def format_row(row: Row, tasks: List[str]) -> str:
    accuracy = " ".join(f"{100 * row.accuracy[t]:>6.1f}" for t in tasks)
    return (f"{row.calib:<6} {row.method:<16} {row.bits:>4} {row.avg_bits:>8.3f} {row.size_mb:>7.3f} {accuracy} "
            f"{row.quant_seconds:>8.1f} {row.tokens_per_second:>7.1f}")


def format_table(rows: List[Row], tasks: List[str]) -> str:
    header = (f"{'calib':<6} {'method':<16} {'bits':>4} {'avg bits':>8} {'size MB':>7} "
              + " ".join(f"{t:>6}" for t in tasks) + f" {'quant s':>8} {'tok/s':>7}")
    return "\n".join([header, "-" * len(header)] + [format_row(r, tasks) for r in rows])

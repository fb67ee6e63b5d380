"""The accuracy-vs-bits frontier: quantize copies of one model over a grid of
methods x bits x group sizes x kept-weight ratios (x recipes), evaluate each,
and measure its average stored bits per targeted weight.

The gradient statistics (sum_s |G_s| for tacq, sum_s G_s^2 for
squeezellm_like) are computed once per sweep, before any point; a point only
adds what depends on it: the reference Q(W) (and the spqr_like saliency from
the same pass) once per (bits, group size, quantizer options), shared by all
ratios."""

from __future__ import annotations

import copy
import time
from itertools import product
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .config import TACQConfig
from .distributed import Ranks
from .pipeline import quantize_model, reference_pass, spqr_saliency, tacq_score_
from .qlinear import QuantizedLinear
from .quantizer import rtn_dequantized
from .row_split import RowSplitLinear
from .saliency import LossFn, accumulate_gradient_stats
from .targets import TargetFilter, find_targets

Evaluate = Callable[[nn.Module], Dict[str, float]]
PAPER_RECIPE = "paper"
# named TACQConfig options beyond the paper's recipe (docs/accuracy.md measures them)
RECIPES: Dict[str, dict] = {PAPER_RECIPE: {}, "act_order": {"act_order": True}, "layer_budget": {"budget": "layer"},
                             "row_budget": {"budget": "row"}, "rescore": {"rescore": True}}
# options that only change which weights are kept, not the reference quantizer
_SELECTION_OPTIONS = ("method", "ratio", "budget", "rescore", "wide_rows")


@dataclass
class SweepPoint:
    method: str
    recipe: str               # name of the TACQConfig options on top of the paper's recipe
    bits: int                 # code width; 0 for the unquantized model
    group_size: int
    ratio: float              # kept-weight ratio (0 for methods that keep none)
    avg_bits: float           # stored bits per targeted weight, every overhead included
    kept: int
    metrics: Dict[str, float]
    seconds: float            # quantization time, shared score work excluded
    wide_rows: float = 0.0    # fraction of the weights stored with one bit more (TACQConfig.wide_rows)
    pareto: bool = False


def stored_bits_per_weight(model: nn.Module, targets: Optional[Dict[str, nn.Module]] = None) -> float:
    """Bits stored per targeted weight: the bytes of every QuantizedLinear
    tensor of the format (packed codes, scale, zero, row_ptr, col_idx,
    values; bias excluded, as the unquantized model stores it too) and of
    every RowSplitLinear's row_bits, over the layers' N*K. Without quantized
    layers, the bits of the `targets`' weights."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    if not layers:
        if not targets:
            raise ValueError("stored_bits_per_weight: the model has no QuantizedLinear layers; pass targets=")
        weights = [m.weight for m in targets.values()]
        return sum(8 * w.numel() * w.element_size() for w in weights) / sum(w.numel() for w in weights)
    row_bits = sum(8 * m.out_features for m in model.modules() if isinstance(m, RowSplitLinear))
    stored = sum(m.stored_bits() for m in layers) + row_bits
    return stored / sum(m.out_features * m.in_features for m in layers)


class ScoreBank:
    """Per-method scores for quantize_model(scores=...), from gradient
    statistics computed at most once each (gradient_passes counts them) and
    reference passes cached per quantizer setting."""

    def __init__(self, model: nn.Module, calib: list, methods: Sequence[str], loss_fn: Optional[LossFn] = None,
                 target_filter: Optional[TargetFilter] = None, progress: bool = True):
        self.model, self.calib, self.methods = model, calib, set(methods)
        self.targets = find_targets(model, target_filter)
        self.loss_fn, self.progress = loss_fn, progress
        self.gradient_passes = 0
        self._stats: Dict[bool, Dict[str, torch.Tensor]] = {}
        self._scores: Dict[tuple, Dict[str, torch.Tensor]] = {}

    def gradient_stats(self, squared: bool) -> Dict[str, torch.Tensor]:
        if squared not in self._stats:
            self._stats[squared] = accumulate_gradient_stats(self.model, self.calib, self.targets, self.loss_fn,
                                                             squared=squared, progress=self.progress)
            self.gradient_passes += 1
        return self._stats[squared]

    def scores(self, cfg: TACQConfig) -> Optional[Dict[str, torch.Tensor]]:
        """None for configs that use no scores (keep no weights, choose no wide rows)."""
        if not cfg.uses_scores:
            return None
        if cfg.method == "squeezellm_like":
            return self.gradient_stats(squared=True)
        key = (cfg.method, _quantizer_key(cfg))
        if key not in self._scores:
            self._reference(cfg)
        return self._scores[key]

    def _reference(self, cfg: TACQConfig) -> None:
        """One reference pass gives the tacq scores (if tacq is swept with
        this reference) and the spqr_like scores (if spqr_like is swept)."""
        quantizer = _quantizer_key(cfg)
        want_tacq = "tacq" in self.methods and (cfg.method == "tacq" or cfg.reference == "gptq")
        tacq: Dict[str, torch.Tensor] = {}
        if want_tacq:
            stats = self.gradient_stats(squared=False)
            tacq = {name: a.clone() for name, a in stats.items()}

        def tacq_score(name: str, Q: torch.Tensor) -> None:
            tacq_score_(tacq[name], self.targets[name].weight, Q)

        if cfg.method == "tacq" and cfg.reference == "rtn":
            for name, m in self.targets.items():
                tacq_score(name, rtn_dequantized(m.weight, cfg.bits, cfg.group_size))
            self._scores[("tacq", quantizer)] = tacq
            return
        spqr: Dict[str, torch.Tensor] = {}

        def use(name: str, H: torch.Tensor, Q: torch.Tensor) -> None:
            if want_tacq:
                tacq_score(name, Q)
            if "spqr_like" in self.methods:
                spqr[name] = spqr_saliency(self.targets[name].weight, H, cfg.damp)

        reference_pass(self.model, self.calib, self.targets, cfg, self.loss_fn, self.progress, Ranks.single(), use)
        if want_tacq:
            self._scores[("tacq", quantizer)] = tacq
        if spqr:
            self._scores[("spqr_like", quantizer)] = spqr


def _quantizer_key(cfg: TACQConfig) -> tuple:
    """What the reference pass depends on: every option but the selection's."""
    return tuple((f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name not in _SELECTION_OPTIONS)


@dataclass
class SweepGrid:
    methods: List[str]
    bits: List[int]
    group_sizes: List[int]
    ratios: List[float]
    recipes: Dict[str, dict] = field(default_factory=lambda: {PAPER_RECIPE: {}})
    wide_rows: List[float] = field(default_factory=lambda: [0.0])  # tacq only; others get 0

    def configs(self) -> List[tuple]:
        """(recipe name, TACQConfig) per distinct point: methods that keep no
        weights ignore ratio and budget (and rescore and wide_rows are tacq's
        only), so they get one point per quantizer setting, named after the
        first recipe giving it. Raises on a bad option, naming it."""
        out, seen = [], set()
        for (recipe, options), bits, group_size, method, ratio, wide in product(
                self.recipes.items(), self.bits, self.group_sizes, self.methods, self.ratios, self.wide_rows):
            tacq_only = {"rescore"} if method != "tacq" else set()
            cfg = TACQConfig(**{**{k: v for k, v in options.items() if k not in tacq_only},
                                "bits": bits, "group_size": group_size, "method": method,
                                "ratio": ratio, "wide_rows": wide if method == "tacq" else 0.0})
            if not cfg.keeps_weights:
                cfg.ratio, cfg.budget = 0.0, "global"
            key = tuple(sorted(asdict(cfg).items()))
            if key not in seen:
                seen.add(key)
                out.append((recipe, cfg))
        return out


def sweep(model: nn.Module, calib: Iterable, evaluate: Evaluate, grid: SweepGrid, loss_fn: Optional[LossFn] = None,
          target_filter: Optional[TargetFilter] = None, progress: bool = True,
          on_point: Optional[Callable[[SweepPoint], None]] = None) -> List[SweepPoint]:
    """The unquantized model first, then one SweepPoint per grid config,
    each on a fresh copy of `model` (left unchanged). evaluate(model) ->
    {metric: value}; on_point is called as each point is done."""
    calib = list(calib)
    configs = grid.configs()
    targets = find_targets(model, target_filter)
    bank = ScoreBank(model, calib, grid.methods, loss_fn, target_filter, progress)
    points = [SweepPoint("fp", "-", 0, -1, 0.0, stored_bits_per_weight(model, targets), 0, evaluate(model), 0.0)]
    for recipe, cfg in tqdm(configs, desc="sweep", disable=not progress):
        scores = bank.scores(cfg)
        quantized = copy.deepcopy(model)
        start = time.perf_counter()
        report = quantize_model(quantized, calib, cfg, loss_fn=loss_fn, scores=scores, progress=False,
                                target_filter=target_filter)
        seconds = time.perf_counter() - start
        points.append(SweepPoint(cfg.method, recipe, cfg.bits, cfg.group_size, cfg.ratio,
                                 stored_bits_per_weight(quantized), report.kept, evaluate(quantized), seconds,
                                 cfg.wide_rows))
        del quantized
        if on_point is not None:
            on_point(points[-1])
    return points


def mark_pareto(points: List[SweepPoint], metric: str, higher_is_better: bool) -> List[SweepPoint]:
    """Sets .pareto on the quantized points no other quantized point beats
    with at most as many bits; returns those, fewest bits first."""
    sign = 1.0 if higher_is_better else -1.0
    quantized = sorted((p for p in points if p.bits), key=lambda p: (p.avg_bits, -sign * p.metrics[metric]))
    front, best = [], float("-inf")
    for p in quantized:
        p.pareto = sign * p.metrics[metric] > best
        if p.pareto:
            best = sign * p.metrics[metric]
            front.append(p)
    return front

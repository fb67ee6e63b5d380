"""The TACQ pipeline and its baselines end to end (DESIGN.md §1.1, §1.3):
compute_saliency (steps 1-3) and quantize_model (steps 4-6)."""

from __future__ import annotations

import math
import resource
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import ops
from .config import TACQConfig
from .gptq import HessianAccumulator, gptq_quantize, hessian_inverse_factor
from .qlinear import QuantizedLinear, average_bits, storable_scale
from .report import LayerReport, QuantizationReport
from .saliency import LossFn, accumulate_gradient_stats
from .selection import global_topk_masks
from .targets import TargetFilter, find_targets, group_by_block, set_module


class _StopForward(Exception):
    """Raised by a hook once every layer a pass needs has seen its input."""


def _materialize(calib: Iterable) -> list:
    batches = list(calib)
    if not batches:
        raise ValueError("calibration data is empty")
    return batches


def _forward(model: nn.Module, batch, loss_fn: Optional[LossFn]) -> None:
    if loss_fn is not None:
        loss_fn(model, batch)
    elif isinstance(batch, dict):
        model(**{k: v for k, v in batch.items() if k != "labels"})
    else:
        raise ValueError("batches that are not dicts need a loss_fn")


def _token_mask(batch) -> Optional[torch.Tensor]:
    return batch.get("attention_mask") if isinstance(batch, dict) else None


def collect_hessians(model: nn.Module, calib: list, modules: Dict[str, nn.Linear],
                     loss_fn: Optional[LossFn] = None, desc: str = "hessians",
                     progress: bool = True) -> Dict[str, torch.Tensor]:
    """H = 2/n sum x x^T of each module's inputs over the calibration tokens
    (padding, where an attention_mask says so, excluded). Each forward pass
    stops as soon as every module has seen its input."""
    acc = {n: HessianAccumulator(m.in_features, m.weight.device if hasattr(m, "weight") else "cpu")
           for n, m in modules.items()}
    state = {"mask": None, "seen": set()}

    def hook_for(name):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            mask = state["mask"]
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.bool()]
            acc[name].add(x)
            state["seen"].add(name)
            if len(state["seen"]) == len(acc):
                raise _StopForward
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            for batch in tqdm(calib, desc=desc, disable=not progress, leave=False):
                state["mask"], state["seen"] = _token_mask(batch), set()
                try:
                    _forward(model, batch, loss_fn)
                except _StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()
    for name, a in acc.items():
        if a.count == 0:
            raise ValueError(f"target layer {name!r} never ran on the calibration data")
    return {n: a.H.float() for n, a in acc.items()}


def _reference_weights(model, calib, targets, cfg, loss_fn, progress):
    """Yields (name, Q(W)) of DESIGN.md step 1: every target quantized with
    nothing kept. GPTQ here takes Hessians of the full-precision model's
    inputs, one block at a time (so only one block's Hessians are held)."""
    if cfg.reference == "rtn":
        for name, m in targets.items():
            codes, scale, zero = ops.quantize(m.weight.detach().float(), cfg.bits, cfg.group_size)
            yield name, ops.dequantize(ops.pack(codes, cfg.bits), scale, zero, cfg.bits, cfg.group_size,
                                       m.in_features)
        return
    for group in tqdm(group_by_block(model, targets), desc="reference GPTQ", disable=not progress, leave=False):
        modules = {n: targets[n] for n in group}
        hessians = collect_hessians(model, calib, modules, loss_fn, "reference hessians", progress)
        for name, m in modules.items():
            yield name, gptq_quantize(m.weight, hessians.pop(name), cfg.bits, cfg.group_size, None,
                                      cfg.damp, cfg.block_size).weight


def compute_saliency(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                     progress: bool = True, target_filter: Optional[TargetFilter] = None
                     ) -> Dict[str, torch.Tensor]:
    """TACQ scores S = |A * (W - Q(W)) * W| per target layer (fp32 [N, K]).
    Each layer's score overwrites its gradient accumulator A in place."""
    targets = find_targets(model, target_filter)
    calib = _materialize(calib)
    scores = accumulate_gradient_stats(model, calib, targets, loss_fn, progress=progress)
    for name, Q in _reference_weights(model, calib, targets, cfg, loss_fn, progress):
        W = targets[name].weight.detach().float()
        scores[name].mul_(W - Q).mul_(W).abs_()
    return scores


def _baseline_scores(model, calib, targets, cfg, loss_fn, progress) -> Dict[str, torch.Tensor]:
    if cfg.method == "spqr_like":  # GPTQ saliency w^2 / [H^-1]_jj^2
        hessians = collect_hessians(model, calib, targets, loss_fn, "hessians", progress)
        scores = {}
        for name, m in targets.items():
            U = hessian_inverse_factor(hessians.pop(name), cfg.damp)
            hinv_diag = (U * U).sum(dim=0)  # diag(U^T U) = diag(H^-1)
            scores[name] = m.weight.detach().float() ** 2 / hinv_diag[None, :] ** 2
        return scores
    return accumulate_gradient_stats(model, calib, targets, loss_fn, squared=True, progress=progress)


def _check_scores(scores: Dict[str, torch.Tensor], targets: Dict[str, nn.Linear]) -> None:
    if set(scores) != set(targets):
        raise ValueError(f"scores= must have one entry per target layer; missing "
                         f"{sorted(set(targets) - set(scores))[:5]}, extra {sorted(set(scores) - set(targets))[:5]}")
    for name, m in targets.items():
        if tuple(scores[name].shape) != (m.out_features, m.in_features):
            raise ValueError(f"scores[{name!r}] has shape {tuple(scores[name].shape)}, the layer is "
                             f"{m.out_features}x{m.in_features}")


@contextmanager
def _stage(report: QuantizationReport, name: str):
    t0 = time.perf_counter()
    yield
    report.stage_seconds[name] = report.stage_seconds.get(name, 0.0) + time.perf_counter() - t0


def quantize_model(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                   scores: Optional[Dict[str, torch.Tensor]] = None, progress: bool = True,
                   target_filter: Optional[TargetFilter] = None) -> QuantizationReport:
    """Quantizes every target layer of `model` in place (replacing it by a
    QuantizedLinear) with cfg.method, and returns what it did. `scores` (from
    compute_saliency, or any non-negative per-layer ranking) skips the
    gradient pass, so the budget or method can change without recomputing."""
    targets = find_targets(model, target_filter)
    calib = _materialize(calib)
    report = QuantizationReport(cfg.method, cfg.bits, cfg.group_size, cfg.ratio)
    for name, m in targets.items():
        ops.check_group_size("quantize_model", cfg.group_size, m.in_features)

    masks: Dict[str, Optional[torch.Tensor]] = {n: None for n in targets}
    if cfg.keeps_weights:
        with _stage(report, "scores"):
            if scores is None:
                scores = (compute_saliency(model, calib, cfg, loss_fn, progress, target_filter)
                          if cfg.method == "tacq" else _baseline_scores(model, calib, targets, cfg, loss_fn, progress))
            _check_scores(scores, targets)
        with _stage(report, "selection"):
            total = sum(m.weight.numel() for m in targets.values())
            masks = global_topk_masks(scores, math.floor(cfg.ratio * total))

    if cfg.method == "rtn":
        with _stage(report, "quantize"):
            for name, m in tqdm(targets.items(), desc="rtn", disable=not progress):
                codes, scale, zero = ops.quantize(m.weight.detach().float(), cfg.bits, cfg.group_size)
                _replace(model, name, m, QuantizedLinear.from_quantized(
                    codes, storable_scale(scale), zero, None, None, cfg.bits, cfg.group_size, m.bias), report)
    else:
        with _stage(report, "gptq"):
            for group in tqdm(group_by_block(model, targets), desc="gptq blocks", disable=not progress):
                modules = {n: targets[n] for n in group}
                hessians = collect_hessians(model, calib, modules, loss_fn, "block inputs", progress)
                for name in tqdm(group, desc="layers", disable=not progress, leave=False):
                    m = modules[name]
                    result = gptq_quantize(m.weight, hessians.pop(name), cfg.bits, cfg.group_size,
                                           masks[name], cfg.damp, cfg.block_size)
                    _replace(model, name, m, QuantizedLinear.from_quantized(
                        result.codes, result.scale, result.zero, result.weight, masks[name], cfg.bits,
                        cfg.group_size, m.bias), report)

    order = {name: i for i, name in enumerate(targets)}
    report.layers.sort(key=lambda layer: order[layer.name])
    report.peak_memory_bytes = _peak_memory()
    return report


def _replace(model: nn.Module, name: str, original: nn.Linear, q: QuantizedLinear,
             report: QuantizationReport) -> None:
    """Swaps in the quantized layer and records its budget, bits and error."""
    W = original.weight.detach().float()
    err = (q.dense_weight() - W).norm() / W.norm().clamp(min=1e-30)
    report.layers.append(LayerReport(name, (q.out_features, q.in_features), q.nnz,
                                     average_bits(q.out_features, q.in_features, q.bits, q.scale.shape[1], q.nnz),
                                     float(err)))
    set_module(model, name, q)


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

"""The TACQ pipeline and its baselines end to end (docs/method.md):
compute_saliency (steps 1-3) and quantize_model (steps 4-6)."""

from __future__ import annotations

import math
import resource
from contextlib import nullcontext
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import ops
from .config import TACQConfig
from .gptq import gptq_quantize, hessian_inverse_factor
from .qlinear import QuantizedLinear, average_bits
from .quantizer import rtn_dequantized, rtn_quantize
from .report import LayerReport, QuantizationReport
from .saliency import LossFn, accumulate_gradient_stats
from .selection import global_topk_masks
from .sequential import quantize_sequentially
from .targets import TargetFilter, find_targets, set_module


def _materialize(calib: Iterable) -> list:
    batches = list(calib)
    if not batches:
        raise ValueError("calibration data is empty")
    return batches


def _reference_pass(model, calib, targets, cfg, loss_fn, progress,
                    use: Callable[[str, torch.Tensor, torch.Tensor], None]) -> None:
    """Step 1 of docs/method.md with GPTQ: every target quantized with nothing kept,
    in sequence, each layer's Hessian taken from inputs that flow through the
    already GPTQ-quantized prefix, as the final masked GPTQ will see them.
    use(name, H, Q(W)) is called once per target; Q(W) stands in for W only
    for the rest of this pass, the model is left as it was."""
    def quantize_group(hessians: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        quantized = {}
        for name in list(hessians):
            H = hessians.pop(name)
            quantized[name] = gptq_quantize(targets[name].weight, H, cfg.bits, cfg.group_size, None,
                                            cfg.damp, cfg.block_size).weight
            use(name, H, quantized[name])
        return quantized

    quantize_sequentially(model, calib, targets, quantize_group, loss_fn, "reference GPTQ", progress)


def _tacq_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing) -> Dict[str, torch.Tensor]:
    """S = |A * (W - Q(W)) * W|; each layer's score overwrites its accumulator A."""
    with stage("saliency"):
        scores = accumulate_gradient_stats(model, calib, targets, loss_fn, progress=progress,
                                           activation_checkpointing=checkpointing)

    def score(name, H, Q):
        W = targets[name].weight.detach().float()
        scores[name].mul_(W - Q).mul_(W).abs_()

    with stage("reference"):
        if cfg.reference == "rtn":
            for name, m in targets.items():
                score(name, None, rtn_dequantized(m.weight, cfg.bits, cfg.group_size))
        else:
            _reference_pass(model, calib, targets, cfg, loss_fn, progress, score)
    return scores


def compute_saliency(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                     progress: bool = True, target_filter: Optional[TargetFilter] = None,
                     activation_checkpointing: bool = False) -> Dict[str, torch.Tensor]:
    """TACQ scores S = |A * (W - Q(W)) * W| per target layer (fp32 [N, K]).
    activation_checkpointing: recompute each decoder block during the
    gradient pass instead of keeping its activations (long sequences)."""
    targets = find_targets(model, target_filter)
    return _tacq_scores(model, _materialize(calib), targets, cfg, loss_fn, progress, lambda name: nullcontext(),
                        activation_checkpointing)


def _spqr_scores(model, calib, targets, cfg, loss_fn, progress) -> Dict[str, torch.Tensor]:
    """GPTQ saliency w^2 / [H^-1]_jj^2, H from the GPTQ-quantized prefix."""
    scores = {}

    def score(name, H, Q):
        U = hessian_inverse_factor(H, cfg.damp)
        hinv_diag = (U * U).sum(dim=0)  # diag(U^T U) = diag(H^-1)
        scores[name] = targets[name].weight.detach().float() ** 2 / hinv_diag[None, :] ** 2

    _reference_pass(model, calib, targets, cfg, loss_fn, progress, score)
    return scores


def _method_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing) -> Dict[str, torch.Tensor]:
    if cfg.method == "tacq":
        return _tacq_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing)
    if cfg.method == "spqr_like":
        with stage("reference"):
            return _spqr_scores(model, calib, targets, cfg, loss_fn, progress)
    with stage("saliency"):  # squeezellm_like: Fisher sum_s G_s^2
        return accumulate_gradient_stats(model, calib, targets, loss_fn, squared=True, progress=progress,
                                         activation_checkpointing=checkpointing)


def _check_scores(scores: Dict[str, torch.Tensor], targets: Dict[str, nn.Linear]) -> None:
    if set(scores) != set(targets):
        raise ValueError(f"scores= must have one entry per target layer; missing "
                         f"{sorted(set(targets) - set(scores))[:5]}, extra {sorted(set(scores) - set(targets))[:5]}")
    for name, m in targets.items():
        if tuple(scores[name].shape) != (m.out_features, m.in_features):
            raise ValueError(f"scores[{name!r}] has shape {tuple(scores[name].shape)}, the layer is "
                             f"{m.out_features}x{m.in_features}")


def quantize_model(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                   scores: Optional[Dict[str, torch.Tensor]] = None, progress: bool = True,
                   target_filter: Optional[TargetFilter] = None,
                   activation_checkpointing: bool = False) -> QuantizationReport:
    """Quantizes every target layer of `model` in place (replacing it by a
    QuantizedLinear) with cfg.method, and returns what it did. `scores` (from
    compute_saliency, or any non-negative per-layer ranking) skips the
    gradient pass, so the budget or method can change without recomputing.
    activation_checkpointing: the gradient pass (tacq, squeezellm_like)
    recomputes each decoder block instead of keeping its activations."""
    targets = find_targets(model, target_filter)
    calib = _materialize(calib)
    report = QuantizationReport(cfg.method, cfg.bits, cfg.group_size, cfg.ratio)
    for name, m in targets.items():
        ops.check_group_size("quantize_model", cfg.group_size, m.in_features)

    masks: Dict[str, Optional[torch.Tensor]] = {n: None for n in targets}
    if cfg.keeps_weights:
        if scores is None:
            scores = _method_scores(model, calib, targets, cfg, loss_fn, progress, report.stage,
                                    activation_checkpointing)
        _check_scores(scores, targets)
        with report.stage("selection"):
            total = sum(m.weight.numel() for m in targets.values())
            masks = global_topk_masks(scores, math.floor(cfg.ratio * total))

    if cfg.method == "rtn":
        with report.stage("rtn"):
            for name, m in tqdm(targets.items(), desc="rtn", disable=not progress):
                codes, scale, zero = rtn_quantize(m.weight, cfg.bits, cfg.group_size)
                _replace(model, name, m, QuantizedLinear.from_quantized(
                    codes, scale, zero, None, None, cfg.bits, cfg.group_size, m.bias), report)
    else:
        def quantize_group(hessians: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
            for name in tqdm(list(hessians), desc="layers", disable=not progress, leave=False):
                m = targets[name]
                result = gptq_quantize(m.weight, hessians.pop(name), cfg.bits, cfg.group_size,
                                       masks[name], cfg.damp, cfg.block_size)
                _replace(model, name, m, QuantizedLinear.from_quantized(
                    result.codes, result.scale, result.zero, result.weight, masks[name], cfg.bits,
                    cfg.group_size, m.bias), report)
            return {}  # the quantized layers are in the model now

        with report.stage("gptq"):
            quantize_sequentially(model, calib, targets, quantize_group, loss_fn, "gptq blocks", progress)

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

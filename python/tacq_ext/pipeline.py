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
from .budget import mass_budget_masks
from .config import TACQConfig
from .distributed import Ranks, gptq_cost
from .gptq import GPTQResult, gptq_quantize, hessian_inverse_factor
from .offload import each_target_held, offload_of
from .qlinear import QuantizedLinear
from .quantizer import round_to_grid, rtn_dequantized, rtn_quantize
from .row_widths import RowBits, choose_row_bits, gptq_rows, quantized_layer, scores_at_row_bits
from .report import LayerReport, QuantizationReport
from .saliency import LossFn, accumulate_gradient_stats
from .saliency_by_block import gradient_stats_by_block
from .selection import check_scores, global_topk_masks
from .serialization import save_pretrained_writes_tacq
from .sequential import quantize_sequentially, weights_replaced
from .targets import TargetFilter, find_targets, set_module, targets_by_block


def _ranks(model: nn.Module, targets: Dict[str, nn.Linear]) -> Ranks:
    """Ranks of the process group in use (one process without one); the
    layers of each decoder block are spread over the ranks by GPTQ cost."""
    per_block, rest = targets_by_block(model, targets)
    groups = [[(n, gptq_cost(targets[n].out_features, targets[n].in_features)) for n in names]
              for names in per_block + [[n] for n in rest]]
    return Ranks.current(groups)


def _materialize(calib: Iterable, ranks: Ranks) -> list:
    with ranks.agree("reading the calibration data"):
        batches = list(calib)
        if not batches:
            raise ValueError("calibration data is empty" + (f" on rank {ranks.rank}" if ranks.world > 1 else ""))
    return batches


def _saliency(model, calib, targets, loss_fn, progress, checkpointing, ranks, squared=False):
    """Gradient statistics over every rank's batches, on the owner ranks;
    block by block for an offloaded model (its own stages agree)."""
    offload = offload_of(model)
    if offload is not None:
        return gradient_stats_by_block(model, offload, calib, targets, loss_fn, squared, progress, ranks)
    with ranks.agree("saliency"):
        acc = accumulate_gradient_stats(model, calib, targets, loss_fn, squared=squared, progress=progress,
                                        activation_checkpointing=checkpointing)
    return ranks.reduce_to_owners(acc)


def reference_pass(model, calib, targets, cfg, loss_fn, progress, ranks,
                    use: Callable[[str, torch.Tensor, torch.Tensor], None]) -> None:
    """Step 1 of docs/method.md with GPTQ: every target quantized with nothing kept,
    in sequence, each layer's Hessian taken from inputs that flow through the
    already GPTQ-quantized prefix, as the final masked GPTQ will see them.
    use(name, H, Q(W)) is called once per target, on its owner rank; Q(W)
    stands in for W only for the rest of this pass, the model is left as it was."""
    def quantize_group(hessians: Dict[str, Optional[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        names, local = list(hessians), {}
        with ranks.agree("reference GPTQ"):
            for name in names:
                H = hessians.pop(name)
                if H is not None:
                    Q = gptq_quantize(targets[name].weight, H, cfg.bits, cfg.group_size, None,
                                      cfg.damp, cfg.block_size, cfg.act_order).weight
                    use(name, H, Q)
                    local[name] = {"weight": Q}
        return {name: t["weight"] for name, t in ranks.share(names, local).items()}

    quantize_sequentially(model, calib, targets, quantize_group, loss_fn, "reference GPTQ", progress, ranks)


def tacq_score_(acc: torch.Tensor, W: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """The TACQ score |A * (W - Q(W)) * W|, written over the accumulator A
    (where A is: off the device for an offloaded model)."""
    W = W.detach().float().to(acc.device)
    return acc.mul_(W - Q.to(acc.device)).mul_(W).abs_()


def spqr_saliency(W: torch.Tensor, H: torch.Tensor, damp: float) -> torch.Tensor:
    """GPTQ saliency w^2 / [H^-1]_jj^2."""
    U = hessian_inverse_factor(H, damp)
    hinv_diag = (U * U).sum(dim=0)  # diag(U^T U) = diag(H^-1)
    return W.detach().float() ** 2 / hinv_diag[None, :] ** 2


def _tacq_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing, ranks
                 ) -> Dict[str, torch.Tensor]:
    """S = |A * (W - Q(W)) * W| of the layers this rank owns; each layer's
    score overwrites its accumulator A."""
    with stage("saliency"):
        scores = _saliency(model, calib, targets, loss_fn, progress, checkpointing, ranks)

    def score(name, H, Q):
        tacq_score_(scores[name], targets[name].weight, Q)

    with stage("reference"):
        if cfg.reference == "rtn":
            for name in each_target_held(model, list(scores)):
                score(name, None, rtn_dequantized(targets[name].weight, cfg.bits, cfg.group_size))
        else:
            reference_pass(model, calib, targets, cfg, loss_fn, progress, ranks, score)
    return scores


def compute_saliency(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                     progress: bool = True, target_filter: Optional[TargetFilter] = None,
                     activation_checkpointing: bool = False) -> Dict[str, torch.Tensor]:
    """TACQ scores S = |A * (W - Q(W)) * W| per target layer (fp32 [N, K]).
    activation_checkpointing: recompute each decoder block during the
    gradient pass instead of keeping its activations (long sequences).
    With a process group initialized, `calib` is this rank's share and every
    rank gets the scores over all ranks' batches (docs/distributed.md)."""
    targets = find_targets(model, target_filter)
    ranks = _ranks(model, targets)
    scores = _tacq_scores(model, _materialize(calib, ranks), targets, cfg, loss_fn, progress and ranks.leader,
                          lambda name: nullcontext(), activation_checkpointing, ranks)
    return {name: t["scores"] for name, t in
            ranks.share(list(targets), {n: {"scores": s} for n, s in scores.items()}).items()}


def _spqr_scores(model, calib, targets, cfg, loss_fn, progress, ranks: Optional[Ranks] = None
                 ) -> Dict[str, torch.Tensor]:
    """GPTQ saliency w^2 / [H^-1]_jj^2, H from the GPTQ-quantized prefix."""
    ranks, scores = ranks or Ranks.single(), {}

    def score(name, H, Q):
        scores[name] = spqr_saliency(targets[name].weight, H, cfg.damp)

    reference_pass(model, calib, targets, cfg, loss_fn, progress, ranks, score)
    return scores


def _method_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing, ranks
                   ) -> Dict[str, torch.Tensor]:
    """Scores of the layers this rank owns."""
    if cfg.method == "tacq":
        return _tacq_scores(model, calib, targets, cfg, loss_fn, progress, stage, checkpointing, ranks)
    if cfg.method == "spqr_like":
        with stage("reference"):
            return _spqr_scores(model, calib, targets, cfg, loss_fn, progress, ranks)
    with stage("saliency"):  # squeezellm_like: Fisher sum_s G_s^2
        return _saliency(model, calib, targets, loss_fn, progress, checkpointing, ranks, squared=True)


def _check_scores(scores: Dict[str, torch.Tensor], targets: Dict[str, nn.Linear]) -> None:
    if set(scores) != set(targets):
        raise ValueError(f"scores= must have one entry per target layer; missing "
                         f"{sorted(set(targets) - set(scores))[:5]}, extra {sorted(set(scores) - set(targets))[:5]}")
    for name, m in targets.items():
        if tuple(scores[name].shape) != (m.out_features, m.in_features):
            raise ValueError(f"scores[{name!r}] has shape {tuple(scores[name].shape)}, the layer is "
                             f"{m.out_features}x{m.in_features}")


def _select(scores: Dict[str, torch.Tensor], cfg: TACQConfig, targets: Dict[str, nn.Linear], ranks: Ranks
            ) -> Dict[str, torch.Tensor]:
    """Kept-weight masks of the owned layers: floor(ratio * all targeted
    weights) by cfg.budget."""
    with ranks.agree("selection"):
        check_scores(scores)
    k = math.floor(cfg.ratio * sum(m.weight.numel() for m in targets.values()))
    if cfg.budget == "global":
        return global_topk_masks(scores, k, list(targets), ranks.all_sum)
    sizes = {n: (m.out_features, m.in_features) for n, m in targets.items()}
    return mass_budget_masks(scores, k, cfg.budget, sizes, ranks.all_sum)


def _grid_values(result: GPTQResult, W: torch.Tensor, keep: Optional[torch.Tensor], row_bits: Optional[torch.Tensor],
                 cfg: TACQConfig) -> torch.Tensor:
    """The weights as the quantizer of `result` gives them: its dequantized
    codes, and at kept positions W rounded onto the same row/group grid."""
    codes = result.codes
    if keep is not None:
        widest = cfg.bits if row_bits is None else int(row_bits.max())
        rounded = round_to_grid(W, result.scale, result.zero, widest)
        if row_bits is not None:  # each row clamped to its own width's largest code
            largest = (2 ** row_bits.to(device=W.device, dtype=torch.int32) - 1).to(torch.uint8)
            rounded = torch.minimum(rounded, largest[:, None])
        codes = torch.where(keep, rounded, codes)
    layer = quantized_layer(codes, result.scale, result.zero, None, None, row_bits, cfg.bits, cfg.group_size, None)
    return layer.dense_weight()


def _rescored(model, calib, targets, cfg, masks, row_bits: RowBits, loss_fn, progress, checkpointing, ranks
              ) -> Dict[str, torch.Tensor]:
    """TACQConfig.rescore: a masked GPTQ pass with the first kept set, then
    both terms of the score taken again there: the gradient statistics with
    every target at its masked-quantized weight as stored (kept values in
    fp16), and the error W - Q(W) of that pass's quantizer. Returns the
    scores of the layers this rank owns. Holds three fp32 copies of the
    targeted weights (data-parallel: the quantized weights of every layer,
    the grid values of the owned ones)."""
    if offload_of(model) is not None:
        raise ValueError("rescore=True is not supported on a model with offloaded blocks: it holds three fp32 "
                         "copies of the targeted weights, which such a model does not have room for")
    quantized, grid = {}, {}

    def quantize_group(hessians: Dict[str, Optional[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        names, local = list(hessians), {}
        with ranks.agree("first masked GPTQ"):
            for name in names:
                H = hessians.pop(name)
                if H is None:  # another rank owns it
                    continue
                W = targets[name].weight
                r = gptq_rows(W, H, cfg, masks[name], row_bits[name])
                stored = quantized_layer(r.codes, r.scale, r.zero, r.weight, masks[name], row_bits[name], cfg.bits,
                                         cfg.group_size, None)
                local[name] = {"weight": stored.dense_weight()}
                grid[name] = _grid_values(r, W, masks[name], row_bits[name], cfg)
        for name, t in ranks.share(names, local).items():
            quantized[name] = t["weight"]
        return {name: quantized[name] for name in names}

    quantize_sequentially(model, calib, targets, quantize_group, loss_fn, "first masked GPTQ", progress, ranks)
    with weights_replaced(targets, quantized):
        scores = _saliency(model, calib, targets, loss_fn, progress, checkpointing, ranks)
    for name, acc in scores.items():
        tacq_score_(acc, targets[name].weight, grid.pop(name))
    return scores


def quantize_model(model: nn.Module, calib: Iterable, cfg: TACQConfig, loss_fn: Optional[LossFn] = None,
                   scores: Optional[Dict[str, torch.Tensor]] = None, progress: bool = True,
                   target_filter: Optional[TargetFilter] = None,
                   activation_checkpointing: bool = False) -> QuantizationReport:
    """Quantizes every target layer of `model` in place (replacing it by a
    QuantizedLinear) with cfg.method, and returns what it did. `scores` (from
    compute_saliency, or any non-negative per-layer ranking) skips the
    gradient pass, so the budget or method can change without recomputing.
    activation_checkpointing: the gradient pass (tacq, squeezellm_like)
    recomputes each decoder block instead of keeping its activations.
    With a process group initialized, `calib` is this rank's share of the
    batches and every rank ends with the model one process would produce
    from all of them (docs/distributed.md).
    A model from load_offloaded is quantized one decoder block at a time
    (never two blocks' weights on the device) and is an ordinary model after.
    A Hugging Face model's save_pretrained then writes the TACQ format
    (save_quantized with cfg and the report)."""
    targets = find_targets(model, target_filter)
    ranks = _ranks(model, targets)
    progress = progress and ranks.leader
    calib = _materialize(calib, ranks)
    report = QuantizationReport(cfg.method, cfg.bits, cfg.group_size, cfg.ratio)
    for name, m in targets.items():
        ops.check_group_size("quantize_model", cfg.group_size, m.in_features)

    masks: Dict[str, Optional[torch.Tensor]] = {n: None for n in targets}
    row_bits: RowBits = {n: None for n in targets}
    if cfg.uses_scores:
        if scores is None:
            scores = _method_scores(model, calib, targets, cfg, loss_fn, progress, report.stage,
                                    activation_checkpointing, ranks)
        else:
            with ranks.agree("checking the scores= argument"):
                _check_scores(scores, targets)
            scores = {n: s for n, s in scores.items() if ranks.owns(n)}
        with report.stage("selection"):
            row_bits = choose_row_bits(scores, cfg, targets, ranks.all_sum)
            if cfg.keeps_weights:
                masks.update(_select(scores_at_row_bits(scores, row_bits, cfg.bits), cfg, targets, ranks))
        if cfg.rescore and cfg.keeps_weights:
            with report.stage("rescore"):
                scores = _rescored(model, calib, targets, cfg, masks, row_bits, loss_fn, progress,
                                   activation_checkpointing, ranks)
            with report.stage("selection"):
                masks.update(_select(scores_at_row_bits(scores, row_bits, cfg.bits), cfg, targets, ranks))

    if cfg.method == "rtn":
        with report.stage("rtn"):
            for name in each_target_held(model, tqdm(targets, desc="rtn", disable=not progress)):
                m = targets[name]
                codes, scale, zero = rtn_quantize(m.weight, cfg.bits, cfg.group_size)
                _replace(model, name, m, QuantizedLinear.from_quantized(
                    codes, scale, zero, None, None, cfg.bits, cfg.group_size, m.bias), report)
    else:
        def quantize_group(hessians: Dict[str, Optional[torch.Tensor]]) -> Dict[str, torch.Tensor]:
            names, local = list(hessians), {}
            with ranks.agree("gptq"):
                for name in tqdm([n for n in names if hessians[n] is not None], desc="layers",
                                 disable=not progress, leave=False):
                    W = targets[name].weight
                    keep = None if masks[name] is None else masks[name].to(W.device)
                    r = gptq_rows(W, hessians.pop(name), cfg, keep, row_bits[name])
                    local[name] = {"codes": r.codes, "scale": r.scale, "zero": r.zero, "weight": r.weight}
                    if keep is not None:
                        local[name]["keep"] = keep
            for name, t in ranks.share(names, local).items():
                m = targets[name]
                _replace(model, name, m, quantized_layer(
                    t["codes"], t["scale"], t["zero"], t["weight"], t.get("keep"), row_bits[name], cfg.bits,
                    cfg.group_size, m.bias), report)
            return {}  # the quantized layers are in the model now

        with report.stage("gptq"):
            quantize_sequentially(model, calib, targets, quantize_group, loss_fn, "gptq blocks", progress,
                                  ranks)

    offload = offload_of(model)
    if offload is not None:
        offload.finish()  # the quantized model is small: every block stays on the device
    order = {name: i for i, name in enumerate(targets)}
    report.layers.sort(key=lambda layer: order[layer.name])
    report.peak_memory_bytes = _peak_memory()
    save_pretrained_writes_tacq(model, cfg, report)
    return report


def _replace(model: nn.Module, name: str, original: nn.Linear, q, report: QuantizationReport) -> None:
    """Swaps in the quantized layer (QuantizedLinear or RowSplitLinear) and
    records its budget, bits and error."""
    W = original.weight.detach().float()
    err = (q.dense_weight() - W).norm() / W.norm().clamp(min=1e-30)
    report.layers.append(LayerReport(name, (q.out_features, q.in_features), q.nnz, q.avg_bits(), float(err)))
    set_module(model, name, q)


def _peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

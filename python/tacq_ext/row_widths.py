"""Rows at different bit widths (TACQConfig.wide_rows, docs/method.md,
Recipes): which rows get one bit more, the scores as the kept-weight
selection sees them then, GPTQ with each row at its width, and the stored
layer (a RowSplitLinear where widths differ)."""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .config import TACQConfig
from .gptq import GPTQResult, gptq_quantize
from .qlinear import QuantizedLinear
from .row_split import RowSplitLinear, part_rows
from .selection import SumOverRanks, _local


def wide_row_bits(scores: Dict[str, torch.Tensor], budget: int, bits: int,
                  sizes: Optional[Dict[str, Tuple[int, int]]] = None,
                  sum_over_ranks: SumOverRanks = _local) -> Dict[str, torch.Tensor]:
    """Each layer's row widths (uint8 [N]): bits + 1 for the rows with the
    largest mean score over all layers, taken in that order while their
    weights add up to at most `budget`; bits for the others. Every layer in
    `sizes` (default: the shapes of `scores`) gets its vector, on every rank:
    each puts its layers' row means in a vector of every row's, summed over
    the ranks as in mass_budget_masks."""
    sizes = {n: tuple(s.shape) for n, s in scores.items()} if sizes is None else sizes
    first = dict(zip(sizes, torch.tensor([0] + [rows for rows, _ in sizes.values()]).cumsum(0).tolist()))
    row_mean = torch.zeros(sum(rows for rows, _ in sizes.values()), dtype=torch.float64)
    for name, s in scores.items():
        row_mean[first[name]:first[name] + s.shape[0]] = s.sum(dim=1, dtype=torch.float64).cpu() / s.shape[1]
    row_mean = sum_over_ranks(row_mean)
    width = torch.cat([torch.full((rows,), cols) for rows, cols in sizes.values()])
    order = torch.argsort(row_mean, descending=True, stable=True)
    wide = torch.zeros(len(row_mean), dtype=torch.bool)
    wide[order[width[order].cumsum(0) <= budget]] = True
    row_bits = (bits + wide.to(torch.uint8)).to(torch.uint8)
    return {name: row_bits[first[name]:first[name] + rows] for name, (rows, _) in sizes.items()}


RowBits = Dict[str, Optional[torch.Tensor]]  # each layer's row widths (uint8 [N]), None where all are cfg.bits


def choose_row_bits(scores: Dict[str, torch.Tensor], cfg: TACQConfig, targets: Dict[str, nn.Linear],
                    sum_over_ranks: SumOverRanks = _local) -> RowBits:
    """Every layer's row widths for cfg.wide_rows, on every rank (`scores`:
    this rank's layers)."""
    if not cfg.wide_rows:
        return {n: None for n in targets}
    budget = math.floor(cfg.wide_rows * sum(m.weight.numel() for m in targets.values()))
    sizes = {n: (m.out_features, m.in_features) for n, m in targets.items()}
    return wide_row_bits(scores, budget, cfg.bits, sizes, sum_over_ranks)


def scores_at_row_bits(scores: Dict[str, torch.Tensor], row_bits: RowBits, bits: int) -> Dict[str, torch.Tensor]:
    """The scores with each wide row's scaled by the ratio of the two widths'
    quantization steps, (2^b - 1) / (2^(b+1) - 1): the error term W - Q(W)
    of the score shrinks about so with one bit more (new tensors; `scores`
    may be shared)."""
    step_ratio = (2**bits - 1) / (2 ** (bits + 1) - 1)
    out = {}
    for name, s in scores.items():
        rb = row_bits[name]
        out[name] = s if rb is None else s * torch.where(rb.to(s.device) > bits, step_ratio, 1.0)[:, None]
    return out


def gptq_rows(W: torch.Tensor, H: torch.Tensor, cfg: TACQConfig, keep: Optional[torch.Tensor],
              row_bits: Optional[torch.Tensor]) -> GPTQResult:
    """gptq_quantize with each row at its width in row_bits (None: all at
    cfg.bits). GPTQ treats the rows independently, so the rows of each width
    are one call; the result holds every row."""
    if row_bits is None:
        return gptq_quantize(W, H, cfg.bits, cfg.group_size, keep, cfg.damp, cfg.block_size, cfg.act_order)
    out = None
    for bits in sorted(int(b) for b in row_bits.unique()):
        rows = part_rows(row_bits, bits).to(W.device)
        r = gptq_quantize(W[rows], H, bits, cfg.group_size, None if keep is None else keep[rows], cfg.damp,
                          cfg.block_size, cfg.act_order)
        if out is None:
            out = GPTQResult(*(t.new_empty((W.shape[0],) + t.shape[1:]) for t in (r.codes, r.scale, r.zero, r.weight)))
        out.codes[rows], out.scale[rows], out.zero[rows], out.weight[rows] = r.codes, r.scale, r.zero, r.weight
    return out


def quantized_layer(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, weight: Optional[torch.Tensor],
                    keep: Optional[torch.Tensor], row_bits: Optional[torch.Tensor], bits: int, group_size: int,
                    bias: Optional[torch.Tensor]):
    """The stored layer: a RowSplitLinear of one part per width in row_bits,
    or a QuantizedLinear where every row has the same width."""
    if row_bits is not None and bool((row_bits == row_bits[0]).all()):
        bits, row_bits = int(row_bits[0]), None
    if row_bits is None:
        return QuantizedLinear.from_quantized(codes, scale, zero, weight, keep, bits, group_size, bias)

    def part(width: int, rows: torch.Tensor) -> QuantizedLinear:
        rows = rows.to(codes.device)
        pick = lambda t: None if t is None else t[rows]
        return QuantizedLinear.from_quantized(codes[rows], scale[rows], zero[rows], pick(weight), pick(keep), width,
                                              group_size, None)

    return RowSplitLinear.from_rows(row_bits.to(codes.device), part, bias)

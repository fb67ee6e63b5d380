"""Kept-weight budgets by score mass: the k kept weights are split over the
layers (or over all rows of all layers) in proportion to the sum of their
scores, and each takes its largest scores. The paper's global top-k is
selection.global_topk_masks."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .selection import SumOverRanks, _local


def split_by_mass(mass: torch.Tensor, capacity: torch.Tensor, k: int) -> torch.Tensor:
    """int64 counts summing to min(k, capacity.sum()), proportional to `mass`
    (largest remainders), none above its capacity: what a capped unit cannot
    take is split again over the others."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    mass, capacity = mass.double().clamp(min=0), capacity.long()
    counts = torch.zeros_like(capacity)
    remaining = min(k, int(capacity.sum()))
    while remaining > 0:
        open_ = counts < capacity
        weights = torch.where(open_, mass, 0.0)
        if float(weights.sum()) == 0.0:  # no mass left: spread evenly over the open units
            weights = open_.double()
        share = weights / weights.sum() * remaining
        full = open_ & (share >= capacity - counts)
        if full.any():  # these get their capacity; the rest is split again
            remaining -= int((capacity - counts)[full].sum())
            counts[full] = capacity[full]
            continue
        add = share.floor().long()
        left = remaining - int(add.sum())
        remainder = torch.where(open_, share - share.floor(), -1.0)
        add[torch.topk(remainder, left).indices] += 1  # largest remainders
        counts += add
        remaining = 0
    return counts


def _top_per_row(s: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool mask of the counts[r] largest entries of each row r."""
    ranks = torch.empty_like(s, dtype=torch.long)
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    ranks.scatter_(1, order, torch.arange(s.shape[1], device=s.device).expand_as(s).contiguous())
    return ranks < counts.to(s.device)[:, None]


def mass_budget_masks(scores: Dict[str, torch.Tensor], k: int, by: str,
                      sizes: Optional[Dict[str, Tuple[int, int]]] = None,
                      sum_over_ranks: SumOverRanks = _local) -> Dict[str, torch.Tensor]:
    """Bool masks keeping k weights, split over layers (by="layer") or rows
    (by="row") by score mass, the largest scores within each.

    Data-parallel: `scores` holds this rank's layers, `sizes` {name: (rows,
    columns)} every layer in model order (default: the shapes of `scores`),
    and sum_over_ranks sums a float64 tensor over the ranks. Each rank puts
    its layers' masses in a vector of every layer's (or row's), zeros
    elsewhere; summed, that vector is exactly what one process computes, so
    every rank splits k the same way."""
    if by not in ("layer", "row"):
        raise ValueError(f"by must be 'layer' or 'row', got {by!r}")
    sizes = {n: tuple(s.shape) for n, s in scores.items()} if sizes is None else sizes
    total = sum(rows * cols for rows, cols in sizes.values())
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}")
    if by == "layer":
        capacity = torch.tensor([rows * cols for rows, cols in sizes.values()])
    else:
        capacity = torch.cat([torch.full((rows,), cols) for rows, cols in sizes.values()])
    units = [1 if by == "layer" else rows for rows, _ in sizes.values()]  # entries of `mass` per layer
    first = dict(zip(sizes, torch.tensor([0] + units).cumsum(0).tolist()))
    mass = torch.zeros(len(capacity), dtype=torch.float64)
    for name, s in scores.items():
        layer_mass = s.double().sum(dim=None if by == "layer" else 1).cpu()
        mass[first[name]:first[name] + layer_mass.numel()] = layer_mass
    mass = sum_over_ranks(mass)
    counts = split_by_mass(mass, capacity, k)
    masks = {}
    for name, s in scores.items():
        if by == "row":
            masks[name] = _top_per_row(s, counts[first[name]:first[name] + s.shape[0]])
            continue
        flat = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
        flat[torch.topk(s.flatten(), int(counts[first[name]])).indices] = True
        masks[name] = flat.view_as(s)
    return masks


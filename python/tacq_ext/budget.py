"""Kept-weight budgets by score mass: the k kept weights are split over the
layers (or over all rows of all layers) in proportion to the sum of their
scores, and each takes its largest scores. The paper's global top-k is
selection.global_topk_masks."""

from __future__ import annotations

from typing import Dict, List

import torch


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


def mass_budget_masks(scores: Dict[str, torch.Tensor], k: int, by: str) -> Dict[str, torch.Tensor]:
    """Bool masks keeping k weights, split over layers (by="layer") or rows
    (by="row") by score mass, the largest scores within each."""
    if by not in ("layer", "row"):
        raise ValueError(f"by must be 'layer' or 'row', got {by!r}")
    names: List[str] = list(scores)
    total = sum(s.numel() for s in scores.values())
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}")
    if by == "layer":
        counts = split_by_mass(torch.stack([scores[n].double().sum().cpu() for n in names]),
                               torch.tensor([scores[n].numel() for n in names]), k)
        masks = {}
        for name, c in zip(names, counts.tolist()):
            flat = torch.zeros(scores[name].numel(), dtype=torch.bool, device=scores[name].device)
            flat[torch.topk(scores[name].flatten(), c).indices] = True
            masks[name] = flat.view_as(scores[name])
        return masks
    rows = [scores[n].double().sum(dim=1).cpu() for n in names]
    capacity = torch.cat([torch.full((scores[n].shape[0],), scores[n].shape[1]) for n in names])
    counts = split_by_mass(torch.cat(rows), capacity, k).split([r.numel() for r in rows])
    return {n: _top_per_row(scores[n], c) for n, c in zip(names, counts)}

"""Exact global top-k over per-layer score tensors (docs/method.md, step 4),
without ever concatenating them: a bisection on the float32 bit patterns of
the threshold counts scores above it layer by layer (scores are >= 0, so their
bit patterns order like their values); ties at the threshold are broken by
(layer order, flat index), the same order a stable sort of the concatenation
would use.

In a data-parallel run each rank holds the scores of the layers it owns; only
counts are summed over the ranks (`sum_over_ranks`), so every rank arrives at
the same threshold and the masks are the ones a single process would choose."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch

SumOverRanks = Callable[[torch.Tensor], torch.Tensor]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t


def check_scores(scores: Dict[str, torch.Tensor]) -> None:
    for name, s in scores.items():
        if s.dtype != torch.float32:
            raise ValueError(f"scores[{name!r}] must be float32, got {s.dtype}")
        if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError(f"scores[{name!r}] must be finite and >= 0")


def _count_above(scores: Dict[str, torch.Tensor], threshold_bits: int, sum_over_ranks: SumOverRanks) -> int:
    t = torch.tensor(threshold_bits, dtype=torch.int32).view(torch.float32).item()
    local = sum(int((s > t).sum()) for s in scores.values())
    return int(sum_over_ranks(torch.tensor([local], dtype=torch.int64)))


def global_topk_masks(scores: Dict[str, torch.Tensor], k: int, order: Optional[Sequence[str]] = None,
                      sum_over_ranks: SumOverRanks = _local) -> Dict[str, torch.Tensor]:
    """Bool masks (shape of each score tensor) marking the k largest scores
    overall. order: every layer's name in model order (default: the keys of
    `scores`, which then hold every layer); sum_over_ranks sums an int64
    tensor over the ranks of a data-parallel run."""
    order = list(scores) if order is None else list(order)
    total = int(sum_over_ranks(torch.tensor([sum(s.numel() for s in scores.values())], dtype=torch.int64)))
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}")
    check_scores(scores)
    if k == 0:
        return {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
    # Invariant: count(s > lo) >= k > count(s > hi), on non-negative float bit
    # patterns; lo = -1 stands for "below 0" and is never evaluated. The final
    # hi is the k-th largest score.
    lo, hi = -1, 0x7F800000  # +inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _count_above(scores, mid, sum_over_ranks) < k:
            hi = mid
        else:
            lo = mid
    threshold = torch.tensor(hi, dtype=torch.int32).view(torch.float32).item()
    remaining = k - _count_above(scores, hi, sum_over_ranks)
    position = {name: i for i, name in enumerate(order)}
    ties = torch.zeros(len(order), dtype=torch.int64)
    for name, s in scores.items():
        ties[position[name]] = int((s == threshold).sum())
    ties = sum_over_ranks(ties)
    taken_before = torch.cumsum(ties, 0) - ties  # ties in earlier layers, which are served first
    masks = {}
    for name, s in scores.items():
        mask = s > threshold
        i = position[name]
        take = max(0, min(int(ties[i]), remaining - int(taken_before[i])))
        if take:
            mask.view(-1)[(s == threshold).flatten().nonzero().flatten()[:take]] = True
        masks[name] = mask
    return masks

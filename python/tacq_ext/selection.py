"""Exact global top-k over per-layer score tensors (docs/method.md, step 4),
without ever concatenating them: a bisection on the float32 bit patterns of
the threshold counts scores above it layer by layer (scores are >= 0, so their
bit patterns order like their values); ties at the threshold are broken by
(layer order, flat index), the same order a stable sort of the concatenation
would use."""

from __future__ import annotations

from typing import Dict

import torch


def _count_above(scores: Dict[str, torch.Tensor], threshold_bits: int) -> int:
    t = torch.tensor(threshold_bits, dtype=torch.int32).view(torch.float32).item()
    return sum(int((s > t).sum()) for s in scores.values())


def global_topk_masks(scores: Dict[str, torch.Tensor], k: int) -> Dict[str, torch.Tensor]:
    """Bool masks (shape of each score tensor) marking the k largest scores overall."""
    total = sum(s.numel() for s in scores.values())
    if not 0 <= k <= total:
        raise ValueError(f"k must be in [0, {total}], got {k}")
    for name, s in scores.items():
        if s.dtype != torch.float32:
            raise ValueError(f"scores[{name!r}] must be float32, got {s.dtype}")
        if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
            raise ValueError(f"scores[{name!r}] must be finite and >= 0")
    if k == 0:
        return {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}
    # Invariant: count(s > lo) >= k > count(s > hi), on non-negative float bit
    # patterns; lo = -1 stands for "below 0" and is never evaluated. The final
    # hi is the k-th largest score.
    lo, hi = -1, 0x7F800000  # +inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _count_above(scores, mid) < k:
            hi = mid
        else:
            lo = mid
    threshold = torch.tensor(hi, dtype=torch.int32).view(torch.float32).item()
    masks, remaining = {}, k - sum(int((s > threshold).sum()) for s in scores.values())
    for name, s in scores.items():
        mask = s > threshold
        if remaining > 0:
            ties = (s == threshold).flatten().nonzero().flatten()[:remaining]
            mask.view(-1)[ties] = True
            remaining -= ties.numel()
        masks[name] = mask
    return masks

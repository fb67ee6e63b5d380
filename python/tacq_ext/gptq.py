"""GPTQ with kept weights (docs/method.md, step 5), one layer at a time.

Frantar et al.'s algorithm: columns are quantized left to right; each
column's rounding error, scaled by the inverse Hessian's Cholesky factor, is
propagated to the columns not yet quantized (lazily, in blocks). Kept weights
have zero error and are never rounded: they absorb updates like any
unprocessed entry until their column is reached, then keep that value.
Quantizer parameters of a row (group_size -1) are fixed up front from the
original row; those of a group when its first column is reached, from the
group's current values. In both, kept weights count as the mean of the
others (tacq.quantize's keep_mask). Scales are clamped into fp16's range and
rounded to fp16 before use (quantizer.storable_scale), since fp16 is what is
stored: rows of equal, zero or tiny weights never divide by a zero scale.

act_order processes the columns in decreasing order of the Hessian's
diagonal; the stored groups stay contiguous in the original column order,
so their parameters are then fixed up front from the original weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import ops
from .quantizer import storable_scale


@dataclass
class GPTQResult:
    codes: torch.Tensor     # uint8 [N, K]; kept positions hold `zero`
    scale: torch.Tensor     # fp32 [N, G], exactly representable in fp16
    zero: torch.Tensor      # fp32 [N, G], integers
    weight: torch.Tensor    # fp32 [N, K]: dequantized codes, kept positions their final value


def hessian_inverse_factor(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*mean(diag H)*I)^-1, in fp32.
    Dead inputs (zero diagonal) get a unit diagonal."""
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True).float()


def _qparams(values: torch.Tensor, keep: Optional[torch.Tensor], bits: int, group_size: int = -1):
    """(scale, zero) [N, G] of `values`, scales as stored."""
    _, scale, zero = ops.quantize(values.contiguous(), bits, group_size, None if keep is None else keep.contiguous())
    return storable_scale(scale), zero


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int,
    group_size: int = -1,
    keep: Optional[torch.Tensor] = None,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> GPTQResult:
    N, K = W.shape
    W = W.detach().float().clone()
    H = H.to(W.device)
    keep_any = keep is not None and bool(keep.any())
    keep = keep if keep_any else None
    order = torch.argsort(torch.diag(H), descending=True, stable=True) if act_order else None
    if order is not None:
        W, H = W[:, order], H[order][:, order]
        keep = None if keep is None else keep[:, order]
    U = hessian_inverse_factor(H, damp)
    dead = torch.diag(H) == 0
    if dead.any():
        W[:, dead] = 0.0 if keep is None else torch.where(keep[:, dead], W[:, dead], 0.0)
    maxq = 2**bits - 1
    glen = K if group_size in (-1, K) else group_size
    G = K // glen
    group_of = (order if order is not None else torch.arange(K, device=W.device)) // glen
    codes = torch.empty(N, K, dtype=torch.uint8, device=W.device)
    scale = torch.empty(N, G, device=W.device)
    zero = torch.empty(N, G, device=W.device)
    static = G == 1 or order is not None
    if static:
        inverse = None if order is None else torch.argsort(order)
        original = lambda t: t if inverse is None else t[:, inverse]
        scale, zero = _qparams(original(W), None if keep is None else original(keep), bits, group_size)

    for b0 in range(0, K, block_size):
        b1 = min(b0 + block_size, K)
        W1 = W[:, b0:b1].clone()
        Err = torch.zeros_like(W1)
        U1 = U[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = b0 + i
            g = int(group_of[col])
            if not static and col % glen == 0:
                # current values of the group: in-block columns are up to date in
                # W1; later columns still owe this block's pending updates
                g_end = col + glen
                cur = W1[:, i:min(g_end, b1) - b0]
                if g_end > b1:
                    later = W[:, b1:g_end] - Err[:, :i] @ U[b0:b0 + i, b1:g_end]
                    cur = torch.cat([cur, later], dim=1)
                s_g, z_g = _qparams(cur, None if keep is None else keep[:, col:g_end], bits)
                scale[:, g], zero[:, g] = s_g[:, 0], z_g[:, 0]
            w = W1[:, i]
            s, z = scale[:, g], zero[:, g]
            q = torch.clamp(torch.round(w / s) + z, 0, maxq)
            dq = s * (q - z)
            if keep is not None:
                kept = keep[:, col]
                dq = torch.where(kept, w, dq)
                q = torch.where(kept, z, q)
            codes[:, col] = q.to(torch.uint8)
            W[:, col] = dq
            err = (w - dq) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err[:, i] = err
        W[:, b1:] -= Err @ U[b0:b1, b1:]
    if order is not None:
        codes, W = original(codes), original(W)
    return GPTQResult(codes, scale, zero, W)


def add_compensated_(hi: torch.Tensor, lo: torch.Tensor, x: torch.Tensor, rows: int = 1024) -> None:
    """(hi, lo) += x, where hi + lo is a sum kept to about twice fp64's precision:
    hi takes the rounded sum, lo collects the rounding errors (Knuth's TwoSum,
    exact in fp64). Walks `rows` rows at a time to bound the temporaries."""
    for i in range(0, hi.shape[0], rows):
        h, l, v = hi[i:i + rows], lo[i:i + rows], x[i:i + rows]
        s = h + v
        v_part = s - h
        l += (h - (s - v_part)) + (v - v_part)
        h.copy_(s)


class HessianAccumulator:
    """H = 2/n sum_x x x^T over the rows x of a layer's inputs. The sum of each
    call's x^T x (fp64) is kept compensated (add_compensated_), so it is the
    same to far below fp32's precision in whatever order or split the calls'
    terms are added: one process and several ranks round to the same fp32 H."""

    def __init__(self, in_features: int, device):
        self.hi = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.lo = torch.zeros_like(self.hi)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        if x.shape[0] == 0:
            return
        add_compensated_(self.hi, self.lo, x.T @ x)
        self.count += x.shape[0]

    def merge(self, hi: torch.Tensor, lo: torch.Tensor) -> None:
        """Adds another accumulator's sum (its hi and lo); the caller sets the
        token count."""
        add_compensated_(self.hi, self.lo, hi)
        self.lo += lo

    def hessian(self) -> torch.Tensor:
        """fp32 H; frees the sums."""
        H = ((self.hi + self.lo) * (2.0 / self.count)).float()
        self.hi = self.lo = None
        return H

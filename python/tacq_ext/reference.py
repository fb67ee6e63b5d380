"""Slow pure-torch oracles of every tacq op, written from docs/method.md and docs/format.md.

They favour obviousness over speed and are what the tests compare the native
kernels against. Conventions fixed here (and kept by every kernel):

* Rounding is round-half-to-even (``torch.round`` / ``nearbyint``), in fp32.
* Shrink factors are ``f_i = float32(1 - i/100)``, ``i = 0..79``; for each the
  quantizer is ``scale = (f*(hi-lo)) / (2^b-1)``, ``zero = round((-f*lo) / scale)``,
  ``q = clamp(round(w/scale) + zero, 0, 2^b-1)``, all in fp32.
* The error of a choice is ``sum |(scale*(q-zero) - w) / (hi-lo)|^2.4``; the
  constant divisor ranks the ``f`` exactly as the unnormalized error does
  but cannot overflow for huge weights. The first ``f`` (largest) wins ties.
* A group whose range ``hi-lo`` is below the smallest normal float32 (all zeros,
  or only denormals) uses ``lo=-1, hi=+1`` (the method's rule for all zeros).
* Kept weights (``keep_mask``) are replaced by the mean of the group's other
  weights (computed in fp64, rounded to fp32, clamped to their [min, max]) before the statistics and the search (0 when the whole group is
  kept); their code is ``zero``, which dequantizes to exactly 0.
"""

from __future__ import annotations

from typing import Optional, Tuple

import math

import torch

SHRINK_STEPS = 80
ERROR_NORM = 2.4
_TINY = torch.finfo(torch.float32).tiny


def num_groups(K: int, group_size: int) -> Tuple[int, int]:
    """(G, group length) for a row of K and a group_size (-1 or K = whole row)."""
    if group_size in (-1, K):
        return 1, K
    return K // group_size, group_size


def saliency_accumulate(acc: torch.Tensor, grad_out: torch.Tensor, act: torch.Tensor) -> None:
    """acc += sum_b |grad_out[b]^T act[b]|, one sample at a time, in fp64."""
    if grad_out.dim() == 2:
        grad_out, act = grad_out[None], act[None]
    total = torch.zeros(acc.shape, dtype=torch.float64, device=acc.device)
    for g, a in zip(grad_out, act):
        total += (g.double().T @ a.double()).abs()
    acc += total.to(acc.dtype)


def shrink_factors() -> torch.Tensor:
    return (1.0 - torch.arange(SHRINK_STEPS, dtype=torch.float64) / 100.0).float()


def _quantize_group(w: torch.Tensor, keep: torch.Tensor, bits: int):
    """One group (1-D fp32) -> (codes int64, scale, zero) as python floats."""
    maxq = float(2**bits - 1)
    free = ~keep
    if bool(free.any()):  # fp64 mean, clamped so rounding can never widen the range
        fill = w[free].double().mean().float().clamp(w[free].min(), w[free].max())
    else:
        fill = torch.tensor(0.0)
    v = torch.where(keep, fill, w)
    lo = torch.clamp(v.min(), max=0.0)
    hi = torch.clamp(v.max(), min=0.0)
    if float(hi - lo) < _TINY:
        lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    span = hi - lo
    best = None
    for f in shrink_factors():
        scale = (f * span) / maxq
        zero = torch.round((-f * lo) / scale)
        q = torch.clamp(torch.round(v / scale) + zero, 0, maxq)
        err = (((scale * (q - zero) - v) / span).abs() ** ERROR_NORM).sum()
        if best is None or float(err) < best[0]:
            best = (float(err), q, scale, zero)
    _, q, scale, zero = best
    q = torch.where(keep, zero, q)
    return q.to(torch.int64), float(scale), float(zero)


def quantize(
    w: torch.Tensor, bits: int, group_size: int = -1, keep_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Oracle of tacq.quantize: (codes uint8 [N,K], scale fp32 [N,G], zero fp32 [N,G])."""
    N, K = w.shape
    G, glen = num_groups(K, group_size)
    wf = w.detach().float().cpu()
    keep = torch.zeros(N, K, dtype=torch.bool) if keep_mask is None else keep_mask.cpu()
    codes = torch.empty(N, K, dtype=torch.uint8)
    scale = torch.empty(N, G)
    zero = torch.empty(N, G)
    for n in range(N):
        for g in range(G):
            cols = slice(g * glen, (g + 1) * glen)
            q, s, z = _quantize_group(wf[n, cols], keep[n, cols], bits)
            codes[n, cols] = q.to(torch.uint8)
            scale[n, g], zero[n, g] = s, z
    return codes.to(w.device), scale.to(w.device), zero.to(w.device)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Oracle of tacq.pack: bit i*b.. of each row's little-endian stream, 32-code padding."""
    N, K = codes.shape
    Kp = (K + 31) // 32 * 32
    padded = torch.zeros(N, Kp, dtype=torch.int64)
    padded[:, :K] = codes.cpu().to(torch.int64)
    words = torch.zeros(N, Kp * bits // 32, dtype=torch.int64)
    for i in range(Kp):
        for j in range(bits):  # bit j of code i is stream bit i*bits + j
            pos = i * bits + j
            words[:, pos // 32] |= ((padded[:, i] >> j) & 1) << (pos % 32)
    words = torch.where(words >= 2**31, words - 2**32, words)  # uint32 -> int32 bit pattern
    return words.to(torch.int32).to(codes.device)


def unpack(packed: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """Oracle of tacq.unpack."""
    words = packed.cpu().to(torch.int64) & 0xFFFFFFFF
    N = words.shape[0]
    codes = torch.zeros(N, K, dtype=torch.int64)
    for i in range(K):
        for j in range(bits):
            pos = i * bits + j
            codes[:, i] |= ((words[:, pos // 32] >> (pos % 32)) & 1) << j
    return codes.to(torch.uint8).to(packed.device)


def dequantize(packed, scale, zero, bits, group_size, K, dtype=None) -> torch.Tensor:
    """Oracle of tacq.dequantize: scale * (code - zero), computed in fp32."""
    codes = unpack(packed, bits, K).float()
    G, glen = num_groups(K, group_size)
    s = scale.float().repeat_interleave(glen, dim=1)
    z = zero.float().repeat_interleave(glen, dim=1)
    return (s * (codes - z)).to(dtype or torch.float32)


def csr_to_dense(row_ptr, col_idx, values, N: int, K: int) -> torch.Tensor:
    """fp32 [N,K] dense matrix of a CSR residual."""
    dense = torch.zeros(N, K, dtype=torch.float32, device=values.device)
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    rows = torch.repeat_interleave(torch.arange(N, device=values.device), counts)
    dense[rows, col_idx.long()] = values.float()
    return dense


def round_int8_blocks(x: torch.Tensor) -> torch.Tensor:
    """x [M,K] rounded to int8 per block of 32 values along K, back in fp32:
    q = round_half_even(x * (127 / amax)), x = q * (amax / 127), amax = the
    block's max |x| (all-zero blocks stay zero), in fp32; a block whose amax is
    below 2^-64 is multiplied by 2^64 first (exact), so that 127 / amax stays
    finite for denormals."""
    M, K = x.shape
    Kp = -(-K // 32) * 32
    blocks = torch.nn.functional.pad(x.float(), (0, Kp - K)).reshape(M, Kp // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    lift = torch.where(amax < 2.0**-64, 2.0**64, 1.0)
    inverse = torch.full_like(amax, 127.0) / (amax * lift)  # a true division (127.0 / amax is 127 * reciprocal)
    rounded = torch.round(blocks * lift * inverse) * (amax / 127.0)
    rounded = torch.where(amax > 0, rounded, torch.zeros_like(blocks))
    return rounded.reshape(M, Kp)[:, :K]


def mixed_gemv(x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values, x_int8=False) -> torch.Tensor:
    """Oracle of tacq.mixed_gemv: x [..., K] @ (dequant + R)^T in fp64 -> [..., N],
    returned in x's dtype (each row of x rounded by round_int8_blocks first if x_int8)."""
    K, N = x.shape[-1], packed.shape[0]
    W = dequantize(packed, scale, zero, bits, group_size, K).double()
    W += csr_to_dense(row_ptr, col_idx, values, N, K).double()
    rows = x.reshape(-1, K)
    rows = round_int8_blocks(rows) if x_int8 else rows
    return (rows.double() @ W.T).to(x.dtype).reshape(*x.shape[:-1], N)


STORED_MAGIC = b"TACQSL01"  # the stored layer's header starts with these bytes


def stored_sections(storage: torch.Tensor, N: int, K: int, bits: int, G: int, nnz: int) -> dict:
    """The header and six tensors of a stored-layer buffer (docs/format.md,
    "In memory: the stored layer"): header int64 [8], packed int32
    [N, ceil(K/32)*bits], scale and zero fp16 [N, G], row_ptr int32 [N+1],
    col_idx int32 [nnz], values fp16 [nnz], one after another, each starting
    at the next multiple of 64 bytes; the buffer ends at the next multiple of
    N (N > 0) from there."""
    sections = (("header", torch.int64, (8,)),
                ("packed", torch.int32, (N, (K + 31) // 32 * bits)), ("scale", torch.float16, (N, G)),
                ("zero", torch.float16, (N, G)), ("row_ptr", torch.int32, (N + 1,)),
                ("col_idx", torch.int32, (nnz,)), ("values", torch.float16, (nnz,)))
    storage = storage.reshape(-1)
    out, offset = {}, 0
    for name, dtype, shape in sections:
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        out[name] = storage[offset:offset + size].view(dtype).view(shape)
        offset += (size + 63) // 64 * 64
    if N > 0:
        offset = (offset + N - 1) // N * N
    if offset != storage.numel():
        raise ValueError(f"storage holds {storage.numel()} bytes, the layout {offset}")
    return out


def mixed_gemv_stored(x, storage, N, bits, group_size, nnz, x_int8=False) -> torch.Tensor:
    """Oracle of tacq.mixed_gemv_stored: mixed_gemv of the stored layer's sections."""
    K = x.shape[-1]
    t = stored_sections(storage, N, K, bits, num_groups(K, group_size)[0], nnz)
    return mixed_gemv(x, t["packed"], t["scale"], t["zero"], bits, group_size, t["row_ptr"], t["col_idx"],
                      t["values"], x_int8)


def mixed_gemv_layer(x, layer) -> torch.Tensor:
    """Oracle of tacq.mixed_gemv_layer: mixed_gemv_stored with N, K, bits,
    group_size, nnz and x_int8 read from the header (magic, N, K, bits,
    group_size, nnz, x_int8, 0 as int64) of layer [N, bytes / N]."""
    head = layer.reshape(-1)[:64]
    if bytes(head[:8].tolist()) != STORED_MAGIC:
        raise ValueError("layer's header does not start with TACQSL01")
    _, N, K, bits, group_size, nnz, x_int8, _ = head.view(torch.int64).tolist()
    if (N, K) != (layer.shape[0], x.shape[-1]):
        raise ValueError(f"header N, K = {N}, {K} against layer {tuple(layer.shape)}, x {tuple(x.shape)}")
    return mixed_gemv_stored(x, layer, N, bits, group_size, nnz, bool(x_int8))


def bf16_gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Oracle of tacq.bf16_gemv: x [..., K] @ weight[N, K]^T in fp64 with bf16
    subnormals of either taken as zero, rounded to bf16 -> [..., N]."""
    def flushed(t):
        t = t.double()
        return torch.where(t.abs() < torch.finfo(torch.bfloat16).tiny, torch.zeros_like(t), t)

    rows = x.reshape(-1, x.shape[-1])
    return (flushed(rows) @ flushed(weight).T).bfloat16().reshape(*x.shape[:-1], weight.shape[0])


def gather_columns(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Oracle of tacq.gather_columns: out[m, j] = y[m, index[j]], element by element."""
    out = torch.empty(y.shape[0], index.shape[0], dtype=y.dtype)
    for j, source in enumerate(index.tolist()):
        if not 0 <= source < y.shape[1]:
            raise IndexError(f"index[{j}] = {source} is outside [0, {y.shape[1]})")
        out[:, j] = y[:, source]
    return out

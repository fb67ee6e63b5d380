"""Typed wrappers of the ``torch.ops.tacq`` custom ops, and their fake kernels.

Shapes use N = output rows, K = input columns, G = groups per row
(1 for ``group_size=-1``), M = rows of activations. Layouts: docs/format.md.
The fake kernels run the same shape/dtype checks as the C++ kernels, with the
same messages, so ``torch.compile`` and meta tensors see the same errors.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C
from ._C import MIXED_GEMV_MAX_ROWS  # the most activation rows the fused mixed_gemv kernel takes

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def cpu_fused_rows_limit(x_dtype: torch.dtype, out_features: int, in_features: int) -> int:
    """The most rows of x of this dtype that the CPU ``mixed_gemv`` of an
    ``out_features`` x ``in_features`` layer (N x K) runs through its fused
    kernel (16 rows a call) before it takes the dense GEMM route, on the ISA in
    use now (``TACQ_CPU_ISA`` caps it): where slices of the fused kernel
    measured faster than the GEMM (docs/benchmarks.md, Short prompts). fp32
    and bf16 x cross over sooner on layers of at most 256 columns, fp32 x on
    wider ones sooner the smaller the weight, and fp16 x, whose CPU GEMM is
    slow, runs the fused kernel at any number of rows (2**63 - 1). The
    environment variable ``TACQ_CPU_FUSED_ROWS=<n>`` (n >= 16, read on every
    call) sets it for every dtype: the crossover is the machine's, and
    ``bench/prompt_layer.py`` measures it."""
    return _C.cpu_fused_rows_limit(x_dtype, out_features, in_features)


def saliency_accumulate(acc: torch.Tensor, grad_out: torch.Tensor, act: torch.Tensor) -> None:
    """In place ``acc[N,K] += sum_b |grad_out[b]^T @ act[b]|`` (fp32 accumulation).

    ``grad_out``: [B,T,N] or [T,N]; ``act``: [B,T,K] or [T,K]; same float dtype
    (fp32, fp16 or bf16). The absolute value is taken per sample before the sum;
    no per-sample [B,N,K] gradient is ever materialized. On CPUs with AVX-512 BF16,
    bf16 inputs are multiplied as bf16 (exact products, fp32 sums, twice the fp32
    rate); there, products below the smallest normal fp32 (~1.2e-38) count as 0.
    """
    torch.ops.tacq.saliency_accumulate.default(acc, grad_out, act)


def quantize(
    w: torch.Tensor, bits: int, group_size: int = -1, keep_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric uniform quantization with clipping search (docs/method.md, The quantizer).

    ``w`` [N,K] float -> ``codes`` uint8 [N,K], ``scale`` fp32 [N,G], ``zero`` fp32 [N,G].
    ``keep_mask`` bool [N,K]: kept weights are excluded from the statistics (treated as
    the mean of the other weights of their group) and get the code of value 0.
    """
    return torch.ops.tacq.quantize.default(w, bits, group_size, keep_mask)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``codes`` uint8 [N,K] (< 2^bits) -> packed int32 [N, ceil(K/32)*bits] (docs/format.md)."""
    return torch.ops.tacq.pack.default(codes, bits)


def unpack(packed: torch.Tensor, bits: int, K: int) -> torch.Tensor:
    """``packed`` int32 [N, ceil(K/32)*bits] -> codes uint8 [N,K]."""
    return torch.ops.tacq.unpack.default(packed, bits, K)


def dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    K: int,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``scale * (code - zero)`` as [N,K] of ``dtype`` (fp32 default; fp16/bf16 allowed).

    ``scale``, ``zero``: fp32 or fp16 [N,G].
    """
    return torch.ops.tacq.dequantize.default(packed, scale, zero, bits, group_size, K, dtype)


def mixed_gemv(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    x_int8: bool = False,
) -> torch.Tensor:
    """``y[..., N] = x[..., K] @ (dequantize(packed) + R)^T`` with R the CSR
    residual, as ``F.linear`` with that weight.

    ``x`` [..., K] (fp32/bf16/fp16 on CPU and CUDA): its M rows are the product
    of its leading sizes (M = 0 gives an empty y); ``row_ptr`` int32 [N+1],
    ``col_idx`` int32 [nnz] (sorted in each row), ``values`` fp16 [nnz].
    fp32 accumulation; ``y`` has x's dtype.

    Up to MIXED_GEMV_MAX_ROWS (16) rows run the fused kernel, which reads the
    packed weights once. More rows: on CUDA, the fused kernel once per 16 rows;
    on the CPU the same up to ``cpu_fused_rows_limit(x.dtype, N, K)`` rows (48
    for bf16 x, 24 where K <= 256; for fp32 x 16 where K <= 256, else 16 to
    128 as N * K grows; any number for fp16 x; on AVX-512 CPUs with BF16:
    measured crossovers),
    and beyond (a prompt) blocks of the dense weight multiplied by a GEMM in
    x's dtype, as ``F.linear`` with ``dequantize + R`` would (the weight
    rounded to x's dtype).

    ``x_int8``: round x to int8 first, per block of 32 values along K with scale
    max|x|/127 (``reference.round_int8_blocks``), as llama.cpp's CPU kernels do;
    on AVX2 and AVX-512 CPUs the kernel then multiplies int8 (``vpdpbusd`` where
    the CPU has AVX-512 VNNI), faster than fp32 x.
    x must be finite.
    """
    # The same op either way. Eager calls take the module's typed entry to the
    # dispatcher, ~1.7 us faster than torch.ops' argument parsing (half the
    # cost of a small layer); torch.compile traces torch.ops, and tensors or
    # modes with __torch_function__ need its Python-level handling.
    if torch.compiler.is_compiling() or torch.overrides.has_torch_function(
        (x, packed, scale, zero, row_ptr, col_idx, values)
    ):
        return torch.ops.tacq.mixed_gemv.default(
            x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values, x_int8
        )
    return _C.mixed_gemv(x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values, x_int8)


def stored_layout(N: int, K: int, bits: int, G: int, nnz: int) -> dict:
    """Where a layer's header and six tensors lie in its stored-layer buffer
    (uint8, the one tensor ``mixed_gemv_stored`` and ``mixed_gemv_layer``
    read): byte offsets ``header``, ``packed``, ``scale``, ``zero``,
    ``row_ptr``, ``col_idx``, ``values`` (in that order, each a multiple of
    64) and the buffer's size ``bytes`` (a multiple of N where N > 0); scale
    and zero are fp16, the rest as in ``mixed_gemv``. The buffer itself must
    start 64-byte aligned (a tensor of its own)."""
    return _C.stored_layout(N, K, bits, G, nnz)


def write_stored_header(storage: torch.Tensor, N: int, K: int, bits: int, group_size: int, nnz: int,
                        x_int8: bool = False) -> None:
    """Writes the header that ``mixed_gemv_layer`` reads its sizes from (and
    x_int8) into the first 64 bytes of the stored-layer buffer ``storage``."""
    header = torch.frombuffer(bytearray(_C.stored_header(N, K, bits, group_size, nnz, x_int8)), dtype=torch.uint8)
    storage.view(-1)[:header.numel()].copy_(header)


def mixed_gemv_stored(
    x: torch.Tensor, storage: torch.Tensor, N: int, bits: int, group_size: int, nnz: int, x_int8: bool = False
) -> torch.Tensor:
    """``mixed_gemv`` of a layer whose six tensors lie in one uint8 buffer
    ``storage`` (``stored_layout(N, K, bits, G, nnz)``, K = ``x.shape[-1]``):
    the same product, one tensor argument instead of six (a compiled graph
    guards and size-checks every tensor argument of every call)."""
    if torch.compiler.is_compiling() or torch.overrides.has_torch_function((x, storage)):
        return torch.ops.tacq.mixed_gemv_stored.default(x, storage, N, bits, group_size, nnz, x_int8)
    return _C.mixed_gemv_stored(x, storage, N, bits, group_size, nnz, x_int8)


def mixed_gemv_layer(x: torch.Tensor, layer: torch.Tensor) -> torch.Tensor:
    """``mixed_gemv_stored`` of a stored layer seen as uint8 [N, bytes / N]
    whose header (``write_stored_header``) gives K, bits, group_size, nnz and
    x_int8: no int arguments, which a compiled graph's Python wrapper parses
    at ~0.25 us apiece a call. CPU only (on CUDA, ``mixed_gemv_stored``)."""
    if torch.compiler.is_compiling() or torch.overrides.has_torch_function((x, layer)):
        return torch.ops.tacq.mixed_gemv_layer.default(x, layer)
    return _C.mixed_gemv_layer(x, layer)


def gather_columns(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``y`` [M, N] (fp32, fp16 or bf16) -> ``y[:, index]`` [M, len(index)], ``index``
    int64 with entries in [0, N); a CPU kernel (other devices: use ``index_select``)."""
    return torch.ops.tacq.gather_columns.default(y, index)


def bf16_gemv_supported() -> bool:
    """Whether this CPU runs ``bf16_gemv``: AVX-512 BF16 present and not capped
    by ``TACQ_CPU_ISA`` (read on every call)."""
    return _C.cpu_has_avx512_bf16()


def bf16_gemv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` for bf16 ``x`` [..., K] of at most
    MIXED_GEMV_MAX_ROWS (16) rows and a bf16 ``weight`` [N, K] (contiguous):
    fp32 accumulation, y bf16. A CPU kernel for AVX-512 BF16
    (``bf16_gemv_supported()``), which reads the weight near the memory
    bandwidth at decoding batch sizes where torch's bf16 GEMV does not; bf16
    subnormals count as zero. ``Bf16GemvLinear`` routes to it when it applies."""
    return torch.ops.tacq.bf16_gemv.default(x, weight)


# --------------------------------------------------------------------------- checks
# Mirror csrc/ops/validate.cpp: same conditions, same messages.


def _check(cond: bool, op: str, msg: str) -> None:
    torch._check(cond, lambda: f"tacq.{op}: {msg}")


def check_bits(op: str, bits: int) -> None:
    _check(bits in (2, 3, 4), op, f"bits must be 2, 3 or 4, got {bits}")


def check_group_size(op: str, group_size: int, K: int) -> int:
    """Returns G, the number of groups per row."""
    _check(K >= 1, op, f"K must be >= 1, got {K}")
    if group_size == -1 or group_size == K:
        return 1
    _check(
        group_size > 0 and group_size % 32 == 0 and K % group_size == 0,
        op,
        f"group_size must be -1 (whole row), K, or a multiple of 32 that divides K = {K}, "
        f"got {group_size}",
    )
    return K // group_size


def packed_words_per_row(K: int, bits: int) -> int:
    return (K + 31) // 32 * bits


def _check_dim(op: str, name: str, t: torch.Tensor, dim: int, layout: str) -> None:
    _check(t.dim() == dim, op, f"{name} must be {dim}-D {layout}, got shape {list(t.shape)}")


def _check_dtype(op: str, name: str, t: torch.Tensor, dtypes) -> None:
    _check(t.dtype in dtypes, op, f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")


def _check_size(op: str, name: str, t: torch.Tensor, dim: int, expected: int, meaning: str) -> None:
    _check(
        t.shape[dim] == expected,
        op,
        f"{name}.shape[{dim}] must be {meaning} = {expected}, got {t.shape[dim]} (shape {list(t.shape)})",
    )


def _check_same_device(op: str, name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    _check(
        t.device == ref.device,
        op,
        f"{name} is on {t.device} but {ref_name} is on {ref.device}; all tensors must share a device",
    )


def _check_contiguous(op: str, name: str, t: torch.Tensor) -> None:
    _check(
        t.is_contiguous(),
        op,
        f"{name} must be contiguous (call .contiguous() first), got strides {list(t.stride())}",
    )


def _check_packed(op: str, packed: torch.Tensor, bits: int, K: int) -> int:
    _check_dim(op, "packed", packed, 2, "[N, ceil(K/32)*bits]")
    _check_dtype(op, "packed", packed, (torch.int32,))
    _check_contiguous(op, "packed", packed)
    _check(K >= 1, op, f"K must be >= 1, got {K}")
    _check_size(op, "packed", packed, 1, packed_words_per_row(K, bits), "ceil(K/32)*bits")
    return packed.shape[0]


def _check_scale_zero(op, scale, zero, packed, N, G) -> None:
    for name, t in (("scale", scale), ("zero", zero)):
        _check_same_device(op, name, t, packed, "packed")
        _check_dim(op, name, t, 2, "[N, G]")
        _check_dtype(op, name, t, (torch.float32, torch.float16))
        _check_contiguous(op, name, t)
        _check_size(op, name, t, 0, N, "N (rows of packed)")
        _check_size(op, name, t, 1, G, "G (groups per row)")
    _check(
        scale.dtype == zero.dtype,
        op,
        f"scale and zero must have the same dtype, got {scale.dtype} and {zero.dtype}",
    )


def _check_csr(op, row_ptr, col_idx, values, packed, N) -> None:
    for name, t in (("row_ptr", row_ptr), ("col_idx", col_idx), ("values", values)):
        _check_same_device(op, name, t, packed, "packed")
    _check_dim(op, "row_ptr", row_ptr, 1, "[N+1]")
    _check_dim(op, "col_idx", col_idx, 1, "[nnz]")
    _check_dim(op, "values", values, 1, "[nnz]")
    _check_dtype(op, "row_ptr", row_ptr, (torch.int32,))
    _check_dtype(op, "col_idx", col_idx, (torch.int32,))
    _check_dtype(op, "values", values, (torch.float16,))
    for name, t in (("row_ptr", row_ptr), ("col_idx", col_idx), ("values", values)):
        _check_contiguous(op, name, t)
    _check_size(op, "row_ptr", row_ptr, 0, N + 1, "N+1")
    _check_size(op, "values", values, 0, col_idx.shape[0], "nnz (length of col_idx)")


# --------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("tacq::saliency_accumulate")
def _saliency_accumulate_fake(acc, grad_out, act):
    op = "saliency_accumulate"
    _check_dim(op, "acc", acc, 2, "[N, K]")
    _check_dtype(op, "acc", acc, (torch.float32,))
    _check(grad_out.dim() in (2, 3), op, f"grad_out must be 2-D [T, N] or 3-D [B, T, N], got shape {list(grad_out.shape)}")
    _check(act.dim() == grad_out.dim(), op, f"act must have the rank of grad_out ({grad_out.dim()}-D), got shape {list(act.shape)}")
    _check_dtype(op, "grad_out", grad_out, _FLOATS)
    _check(act.dtype == grad_out.dtype, op, f"act and grad_out must have the same dtype, got {act.dtype} and {grad_out.dtype}")
    _check_same_device(op, "grad_out", grad_out, acc, "acc")
    _check_same_device(op, "act", act, acc, "acc")
    _check(grad_out.shape[:-1] == act.shape[:-1], op, f"grad_out and act must agree on the batch and token dimensions, got {list(grad_out.shape)} and {list(act.shape)}")
    _check_size(op, "grad_out", grad_out, grad_out.dim() - 1, acc.shape[0], "N (rows of acc)")
    _check_size(op, "act", act, act.dim() - 1, acc.shape[1], "K (columns of acc)")
    return None


@torch.library.register_fake("tacq::quantize")
def _quantize_fake(w, bits, group_size, keep_mask=None):
    op = "quantize"
    check_bits(op, bits)
    _check_dim(op, "w", w, 2, "[N, K]")
    _check_dtype(op, "w", w, _FLOATS)
    G = check_group_size(op, group_size, w.shape[1])
    if keep_mask is not None:
        _check_dtype(op, "keep_mask", keep_mask, (torch.bool,))
        _check_same_device(op, "keep_mask", keep_mask, w, "w")
        _check(keep_mask.shape == w.shape, op, f"keep_mask must have the shape of w {list(w.shape)}, got {list(keep_mask.shape)}")
    N = w.shape[0]
    codes = w.new_empty((N, w.shape[1]), dtype=torch.uint8)
    scale = w.new_empty((N, G), dtype=torch.float32)
    zero = w.new_empty((N, G), dtype=torch.float32)
    return codes, scale, zero


@torch.library.register_fake("tacq::pack")
def _pack_fake(codes, bits):
    op = "pack"
    check_bits(op, bits)
    _check_dim(op, "codes", codes, 2, "[N, K]")
    _check_dtype(op, "codes", codes, (torch.uint8,))
    _check(codes.shape[1] >= 1, op, f"codes must have K >= 1 columns, got shape {list(codes.shape)}")
    return codes.new_empty((codes.shape[0], packed_words_per_row(codes.shape[1], bits)), dtype=torch.int32)


@torch.library.register_fake("tacq::unpack")
def _unpack_fake(packed, bits, K):
    op = "unpack"
    check_bits(op, bits)
    N = _check_packed(op, packed, bits, K)
    return packed.new_empty((N, K), dtype=torch.uint8)


@torch.library.register_fake("tacq::dequantize")
def _dequantize_fake(packed, scale, zero, bits, group_size, K, dtype=None):
    op = "dequantize"
    check_bits(op, bits)
    N = _check_packed(op, packed, bits, K)
    G = check_group_size(op, group_size, K)
    _check_scale_zero(op, scale, zero, packed, N, G)
    out_dtype = torch.float32 if dtype is None else dtype
    _check(out_dtype in _FLOATS, op, f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    return packed.new_empty((N, K), dtype=out_dtype)


@torch.library.register_fake("tacq::mixed_gemv")
def _mixed_gemv_fake(x, packed, scale, zero, bits, group_size, row_ptr, col_idx, values, x_int8=False):
    op = "mixed_gemv"
    check_bits(op, bits)
    _check(x.dim() >= 1, op, "x must be [..., K] (at least 1-D), got a 0-D tensor")
    K = x.shape[-1]
    _check_dtype(op, "x", x, _FLOATS)
    N = _check_packed(op, packed, bits, K)
    _check_same_device(op, "x", x, packed, "packed")
    G = check_group_size(op, group_size, K)
    _check_scale_zero(op, scale, zero, packed, N, G)
    _check_csr(op, row_ptr, col_idx, values, packed, N)
    return x.new_empty((*x.shape[:-1], N))


@torch.library.register_fake("tacq::mixed_gemv_stored")
def _mixed_gemv_stored_fake(x, storage, N, bits, group_size, nnz, x_int8=False):
    op = "mixed_gemv_stored"
    check_bits(op, bits)
    _check(x.dim() >= 1, op, "x must be [..., K] (at least 1-D), got a 0-D tensor")
    K = x.shape[-1]
    _check_dtype(op, "x", x, _FLOATS)
    _check(K >= 1, op, f"x must have K >= 1 columns, got shape {list(x.shape)}")
    _check(0 <= N <= 2**31 - 1, op, f"N must be in [0, 2^31 - 1], got {N}")
    _check(0 <= nnz <= 2**31 - 1, op, f"nnz must be in [0, 2^31 - 1], got {nnz}")
    G = check_group_size(op, group_size, K)
    size = stored_layout(N, K, bits, G, nnz)["bytes"]
    _check_same_device(op, "storage", storage, x, "x")
    _check_dtype(op, "storage", storage, (torch.uint8,))
    _check_contiguous(op, "storage", storage)
    _check(storage.numel() == size, op, f"storage must hold {size} bytes for N = {N}, K = {K}, bits = {bits}, "
           f"G = {G}, nnz = {nnz} (tacq_ext.ops.stored_layout), got {storage.numel()}")
    return x.new_empty((*x.shape[:-1], N))


@torch.library.register_fake("tacq::mixed_gemv_layer")
def _mixed_gemv_layer_fake(x, layer):
    """What can be checked without the header's bytes; N is layer's first size."""
    op = "mixed_gemv_layer"
    _check(x.dim() >= 1, op, "x must be [..., K] (at least 1-D), got a 0-D tensor")
    _check_dtype(op, "x", x, _FLOATS)
    _check_same_device(op, "layer", layer, x, "x")
    _check_dim(op, "layer", layer, 2, "[N, bytes / N] (a stored layer as QuantizedLinear keeps it)")
    _check_dtype(op, "layer", layer, (torch.uint8,))
    _check_contiguous(op, "layer", layer)
    return x.new_empty((*x.shape[:-1], layer.shape[0]))


@torch.library.register_fake("tacq::bf16_gemv")
def _bf16_gemv_fake(x, weight):
    op = "bf16_gemv"
    _check(x.dim() >= 1, op, "x must be [..., K] (at least 1-D), got a 0-D tensor")
    _check_dtype(op, "x", x, (torch.bfloat16,))
    _check_dim(op, "weight", weight, 2, "[N, K]")
    _check_dtype(op, "weight", weight, (torch.bfloat16,))
    _check_contiguous(op, "weight", weight)
    _check_same_device(op, "weight", weight, x, "x")
    _check_size(op, "weight", weight, 1, x.shape[-1], "K (x.shape[-1])")
    rows = x.shape[:-1].numel()
    _check(rows <= MIXED_GEMV_MAX_ROWS, op,
           f"x must have at most {MIXED_GEMV_MAX_ROWS} rows (the product of its leading sizes), got {rows} "
           f"(shape {list(x.shape)}); use F.linear for more")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.register_fake("tacq::gather_columns")
def _gather_columns_fake(y, index):
    op = "gather_columns"
    _check_dim(op, "y", y, 2, "[M, N]")
    _check_dtype(op, "y", y, _FLOATS)
    _check_contiguous(op, "y", y)
    _check_dim(op, "index", index, 1, "[N_out]")
    _check_dtype(op, "index", index, (torch.int64,))
    _check_contiguous(op, "index", index)
    _check_same_device(op, "index", index, y, "y")
    return y.new_empty((y.shape[0], index.shape[0]))

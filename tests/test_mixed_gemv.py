"""tacq.mixed_gemv: x (dequant + CSR residual)^T against the fp64 reference, on
the CPU (every ISA path) and on CUDA (where the CPU op is checked on the same
inputs too): all bit widths, fp32 / bf16 / fp16 x, M = 1..16, N = 1, K not a
multiple of 32, group sizes of every kind, short rows two to a chunk, rows with no and with K residual
entries, misaligned and strided buffers, invalid CSR, opcheck, bad input."""

from typing import NamedTuple

import pytest
import torch

from tacq_ext import ops, reference

from conftest import CUDA, torch_threads

BITS = [2, 3, 4]
XTYPES = [torch.float32, torch.bfloat16, torch.float16]


class Layer(NamedTuple):
    """A random packed layer on the CPU, with the codes it packs."""
    packed: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    codes: torch.Tensor
    bits: int
    group_size: int

    def on(self, device):
        """The op's arguments after x: (packed, scale, zero, bits, group_size, row_ptr, col_idx, values)."""
        return (*(t.to(device) for t in self[:3]), self.bits, self.group_size,
                *(t.to(device) for t in self[3:6]))

    def dense(self):
        """W = dequantize + residual as docs/format.md and reference.py define it
        (scale * (code - zero) in fp32, plus the CSR entries), in fp64. From the
        codes: the packing is held to reference.pack bit for bit by test_pack.py
        (the reference's bit-by-bit pack/unpack would dominate this file's time)."""
        N, K = self.codes.shape
        _, glen = reference.num_groups(K, self.group_size)
        s = self.scale.float().repeat_interleave(glen, dim=1)[:, :K]
        z = self.zero.float().repeat_interleave(glen, dim=1)[:, :K]
        W = (s * (self.codes.float() - z)).double()
        return W + reference.csr_to_dense(self.row_ptr, self.col_idx, self.values, N, K).double()


def make_layer(N, K, bits, group_size=-1, counts=None, scale_dtype=torch.float32, seed=0):
    """counts: residual entries per row (sorted distinct columns); default 0 to ~2 % of K."""
    g = torch.Generator().manual_seed(seed)
    G, _ = reference.num_groups(K, group_size)
    codes = torch.randint(0, 2**bits, (N, K), generator=g).to(torch.uint8)
    scale = (torch.rand(N, G, generator=g) * 0.05 + 0.01).to(scale_dtype)
    zero = torch.randint(0, 2**bits, (N, G), generator=g).float().to(scale_dtype)
    if counts is None:
        counts = torch.randint(0, max(1, K // 50) + 1, (N,), generator=g).tolist()
    cols = [torch.randperm(K, generator=g)[:c].sort().values for c in counts]
    row_ptr = torch.tensor([0] + torch.tensor(counts, dtype=torch.int64).cumsum(0).tolist(), dtype=torch.int32)
    col_idx = torch.cat(cols).to(torch.int32) if cols else torch.zeros(0, dtype=torch.int32)
    values = (torch.randn(int(row_ptr[-1]), generator=g) * 0.5).to(torch.float16)
    packed = ops.pack(codes, bits) if N else torch.zeros(0, (K + 31) // 32 * bits, dtype=torch.int32)
    return Layer(packed, scale, zero, row_ptr, col_idx, values, codes, bits, group_size)


def random_x(M, K, dtype, seed=1):
    return torch.randn(M, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


def gemv(x, layer, device):
    return ops.mixed_gemv(x.to(device), *layer.on(device))


def exact(x, W):
    """(x·Wᵀ in fp64, sum |x|·|W|): the reference result and the scale of its
    fp32 accumulation error."""
    xd = x.cpu().double()
    return xd @ W.T, xd.abs() @ W.abs().T


def check(y, x, W, device, reference_rows=None):
    """|y - x·Wᵀ| within the rounding of an fp32-accumulated result to y's dtype
    of the exact (fp64) result, plus 1e-5 of sum |x|·|W| for the fp32
    accumulation. Rounding: the CPU kernels round once (half an ulp); the CUDA
    kernels are held to one ulp. reference_rows: exact(x, W), or of more rows of
    which x holds the first."""
    ref, acc = exact(x, W) if reference_rows is None else (t[: x.shape[0]] for t in reference_rows)
    ulps = 0.5 if device == "cpu" else 1.0
    bound = ulps * torch.finfo(y.dtype).eps * ref.abs() + 1e-5 * acc + 1e-30
    err = (y.cpu().double() - ref).abs()
    assert y.dtype == x.dtype and y.shape == ref.shape and y.device.type == device
    assert bool((err <= bound).all()), f"max error {float(err.max()):.3g}, worst ratio {float((err / bound).max()):.3g}"


def check_op(x, layer, device, W=None, reference_rows=None):
    """The op on `device` against the reference; on CUDA the CPU op on the same
    inputs as well (as the CPU case of the same test does)."""
    W = layer.dense() if W is None else W
    check(gemv(x, layer, device), x, W, device, reference_rows)
    if device != "cpu":
        check(gemv(x, layer, "cpu"), x, W, "cpu", reference_rows)


# Beyond the edge cases, the shapes reach each way the AVX-512 lane kernels
# (chunks of 128 4-bit, 256 2-bit or 512 3-bit codes; tiles of 4 output rows, then
# single rows) apply group scales: groups of whole chunks (-1, 128/256, 512, and
# K = 1056 with a last chunk of one 32-code block), several groups per chunk (32,
# 64, and 320 = 5 x 64 with a part-filled last chunk), and groups that straddle
# chunks (96, 160); N = 37 / 48 / 70 spread rows over several CUDA warps and blocks.
SHAPES = [(1, 1, -1), (1, 64, -1), (5, 31, -1), (9, 33, -1), (3, 33, 33), (8, 64, 32), (37, 100, -1),
          (48, 256, 32), (4, 320, 64), (5, 288, 96), (3, 1600, 160), (7, 1024, 512), (70, 1024, 128),
          (5, 1056, 1056), (9, 4096, 128), (2, 9000, -1), (3, 14336, -1)]


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", SHAPES)
def test_matches_reference(device, cpu_isa, N, K, group_size, bits, dtype, scale_dtype):
    """M = 5: one 4-row tile of activation rows and a 1-row remainder, and
    M = 1 (with bf16 x on AVX-512 BF16, 2-bit codes are then read in place);
    scales and zeros stored as fp32 and as fp16 (which the AVX-512 kernels
    read as stored and the others convert)."""
    layer = make_layer(N, K, bits, group_size, scale_dtype=scale_dtype, seed=N * K + bits)
    x = random_x(5, K, dtype, seed=K)
    check_op(x, layer, device)
    check_op(x[:1], layer, device)


@pytest.mark.parametrize("N,K,group_size", [(9, 14336, -1), (8, 4096, 64), (5, 100, -1), (6, 1056, 32),
                                            (4, 288, 96)])
@pytest.mark.parametrize("x_kind", ["positive", "constant", "outliers", "huge"])
def test_one_row_codes_in_place(device, cpu_isa, N, K, group_size, x_kind):
    """One bf16 row at 2 bits, where the AVX-512 BF16 kernel reads codes in
    place with x staged up to 16x larger: its rounding held to check()'s bound
    where it is worst (x of one sign and zero points mid-range, so that the
    result cancels); x too large to stage scaled (an element of 1e38: 16x
    that overflows bf16) falls back to the general decode and stays exact."""
    layer = make_layer(N, K, 2, group_size, seed=K)
    layer = layer._replace(zero=torch.full_like(layer.zero, 1.5))
    g = torch.Generator().manual_seed(K)
    x = {"positive": torch.rand(1, K, generator=g) + 1.0,
         "constant": torch.full((1, K), 0.75),
         "outliers": torch.randn(1, K, generator=g) * torch.where(torch.arange(K) % 97 == 0, 300.0, 1.0),
         "huge": torch.randn(1, K, generator=g).index_fill(1, torch.tensor([K // 2]), 1e38)}[x_kind]
    x = x.to(torch.bfloat16)
    check_op(x, layer, device)
    y = gemv(x, layer, device)
    assert bool(y.isfinite().all())


@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", [(1, 31, -1), (3, 33, 33), (3, 1600, 160), (70, 1024, 128),
                                            (8, 9000, -1)])
def test_every_row_count(device, cpu_isa, N, K, group_size, bits, dtype):
    """M = 1..16: every tile of 4 / 3 / 2 / 1 activation rows and their sums,
    with N = 1, N a multiple of 4 and not, K < 32, K not a multiple of 32, long
    K, and every kind of group (whole rows, one odd group, groups in and
    straddling chunks)."""
    layer = make_layer(N, K, bits, group_size, seed=N + K + bits)
    W = layer.dense()
    x = random_x(16, K, dtype, seed=N)
    rows = exact(x, W)
    for M in range(1, 17):
        check_op(x[:M], layer, device, W, rows)


# Rows of at most half a chunk (K <= 256 at 3 bits, 128 at 2, 64 at 4) run
# two to a chunk in the AVX-512 kernels (PairedView in mixed_gemv_lanes.h).
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("N,K,group_size,bits", [
    (19, 192, -1, 3), (19, 192, 64, 3), (11, 192, 96, 3), (13, 256, 32, 3), (9, 160, 32, 3), (10, 100, -1, 3),
    (21, 128, -1, 2), (7, 100, -1, 2), (12, 128, 64, 2), (10, 64, 32, 4), (9, 31, -1, 4), (2, 192, 32, 3)])
def test_two_rows_per_chunk(device, cpu_isa, N, K, group_size, bits, dtype, scale_dtype):
    """Pairs in tiles of 4 and singly, an odd last row alone; whole rows (K
    not a multiple of 32: padding codes between the two rows), one to six
    groups a row; M = 1, 3, 4, 5 and 16; residual tiles of 8 rows holding
    <= 16 entries together (one step), more (row by row), and a row holding
    every column."""
    counts = ([2] * 8 + [3] * 8 + [0] * 8)[:N]
    counts[N // 2] = K
    layer = make_layer(N, K, bits, group_size, counts=counts, scale_dtype=scale_dtype, seed=N * K + bits)
    W = layer.dense()
    x = random_x(16, K, dtype, seed=K + bits)
    rows = exact(x, W)
    for M in (1, 3, 4, 5, 16):
        check_op(x[:M], layer, device, W, rows)


@pytest.mark.parametrize("threads", [1, 2])
def test_two_rows_per_chunk_from_an_odd_row(cpu_isa, threads):
    """A thread's rows beginning at an odd row: pairs counted from it (453 rows
    of 72 bytes split 227 + 226 between two threads)."""
    layer = make_layer(453, 192, 3, 64, scale_dtype=torch.float16, seed=3)
    with torch_threads(threads):
        check_op(random_x(2, 192, torch.float32), layer, "cpu")


@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16], ids=str)
def test_scale_dtypes(device, dtype, scale_dtype):
    layer = make_layer(12, 96, 3, 32, scale_dtype=scale_dtype, seed=1)
    check_op(random_x(4, 96, dtype), layer, device)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", [(203, 2048, 32), (130, 4096, 32), (9, 40000, 32), (301, 512, -1)])
def test_fp16_scales_over_row_blocks(cpu_isa, N, K, group_size, bits, threads):
    """Kernels that read fp32 scales (generic, AVX2) get fp16 ones converted
    in blocks of rows (~4096 / G rows, a multiple of 4, at least 4) inside each
    thread: N not a multiple of the block, blocks split between threads,
    G = 1250 (the 4-row minimum), and each block's residual rows and output
    columns in place. The AVX-512 kernels read them as stored, over the
    same row splits."""
    layer = make_layer(N, K, bits, group_size, scale_dtype=torch.float16, seed=N + bits)
    with torch_threads(threads):
        check_op(random_x(3, K, torch.float32, seed=K), layer, "cpu")


RESIDUALS = {  # N = 20, K = 300: residual entries per row
    "empty": [0] * 20,
    "full_row": [2] * 3 + [300] + [2] * 16,
    "one_row_holds_all": [0] * 6 + [300] + [0] * 13,
    "empty_rows": [0, 90, 0, 90, 90, 90, 0] + [90] * 13,
    "zero_and_full_rows": [0, 300, 0, 1, 300, 0] + [3] * 14,
    # AVX-512 tiles of 4 rows holding 16 entries (one step for the tile), 17 (row
    # by row), 16 across empty rows (one step), none, and 22 (row by row)
    "tile_sizes": [4, 4, 4, 4, 5, 4, 4, 4, 1, 0, 15, 0, 0, 0, 0, 0, 16, 1, 2, 3],
}


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("case", sorted(RESIDUALS))
def test_residual_shapes(device, cpu_isa, case, bits):
    """Rows with no residual entries next to rows with K of them (every column);
    x in fp32 (2 bits), bf16 (3 bits) or fp16 (4 bits), scales in fp16."""
    dtype = {2: torch.float32, 3: torch.bfloat16, 4: torch.float16}[bits]
    layer = make_layer(20, 300, bits, counts=RESIDUALS[case], scale_dtype=torch.float16, seed=2)
    W = layer.dense()
    x = random_x(16, 300, dtype)
    rows = exact(x, W)
    for M in (1, 2, 16):
        check_op(x[:M], layer, device, W, rows)


@pytest.mark.parametrize("bits", BITS)
def test_misaligned_buffers(device, bits):
    """packed and x starting 4 / 2 bytes past an alignment boundary (CUDA: the
    scalar load paths)."""
    N, K, M = 9, 160, 3
    layer = make_layer(N, K, bits)
    packed = torch.empty(layer.packed.numel() + 1, dtype=torch.int32, device=device)[1:].view(layer.packed.shape)
    packed.copy_(layer.packed)
    x = random_x(M, K, torch.float16)
    xm = torch.empty(M * K + 1, dtype=torch.float16, device=device)[1:].view(M, K)
    xm.copy_(x)
    y = ops.mixed_gemv(xm, packed, *layer.on(device)[1:])
    check(y, x, layer.dense(), device)


def test_non_contiguous_x(device):
    layer = make_layer(16, 128, 2)
    x = random_x(128, 4, torch.float16).t()
    assert not x.is_contiguous()
    check(gemv(x, layer, device), x.contiguous(), layer.dense(), device)


def test_deterministic(device):
    layer = make_layer(64, 2048, 3)
    x = random_x(5, 2048, torch.bfloat16)
    assert torch.equal(gemv(x, layer, device), gemv(x, layer, device))


def test_empty_output_rows(device):
    y = gemv(torch.ones(2, 64, dtype=torch.float16), make_layer(0, 64, 2, counts=[]), device)
    assert y.shape == (2, 0) and y.dtype == torch.float16


@pytest.mark.parametrize("shape", [(64,), (2, 3, 64), (4, 5, 64), (1, 1, 1, 64), (0, 64), (2, 0, 64), (3, 0)],
                         ids=str)
def test_any_leading_shape(device, shape):
    """x [..., K] -> y [..., N] as F.linear: bit for bit the values of x's rows
    [M, K] through the 2-D op, which the tests above hold to the reference
    (the fused kernel for 6 rows, the dense path for 20), strided 3-D x
    included; M = 0 gives an empty y of x's dtype."""
    layer = make_layer(24, 64, 3, counts=[1] * 24)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*shape[:-1], 64, generator=g).to(torch.bfloat16)
    y = gemv(x, layer, device)
    assert y.shape == (*shape[:-1], 24) and y.dtype == x.dtype and y.device.type == device
    if x.numel():
        assert torch.equal(y.reshape(-1, 24), gemv(x.reshape(-1, 64), layer, device))
    if x.dim() == 3 and x.numel():
        strided = x.transpose(0, 1)
        assert not strided.is_contiguous()
        assert torch.equal(gemv(strided, layer, device), y.transpose(0, 1))


@pytest.mark.parametrize("device", [CUDA], indirect=True)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("M", [1, 4, 16])
def test_x_in_several_k_tiles(device, bits, M):
    """K large enough that x does not fit one shared-memory tile for M > 1 (CUDA)."""
    K = 28672 if M == 4 else 8192 + 96
    layer = make_layer(40, K, bits, seed=3)
    x = random_x(M, K, torch.bfloat16)
    check(gemv(x, layer, device), x, layer.dense(), device)


@pytest.mark.parametrize("device", [CUDA], indirect=True)
def test_garbage_csr_is_memory_safe(device):
    """Row pointers out of [0, nnz] or decreasing and columns outside [0, K) are
    not checked on the device; the CUDA kernel must still read nothing out of
    bounds (run under compute-sanitizer to prove it) and skip what it cannot use.
    (The CPU kernels reject such a CSR: test_bad_csr.)"""
    N, K = 8, 96
    packed, scale, zero, *_ = make_layer(N, K, 2, counts=[0] * N).on(device)
    nnz = 5
    row_ptr = torch.tensor([-7, 3, 1, 2**30, 5, -1, 4, 9, 2], dtype=torch.int32, device=device)
    col_idx = torch.tensor([-1, K, 2**31 - 1, 5, -(2**31)], dtype=torch.int32, device=device)
    values = torch.ones(nnz, dtype=torch.float16, device=device)
    x = torch.ones(1, K, dtype=torch.float16, device=device)
    y = ops.mixed_gemv(x, packed, scale, zero, 2, -1, row_ptr, col_idx, values)
    torch.cuda.synchronize()
    dense_only = ops.mixed_gemv(x, packed, scale, zero, 2, -1, torch.zeros(N + 1, dtype=torch.int32, device=device),
                                col_idx[:0], values[:0])
    # Clamped to [0, nnz] the rows cover entries [0,3) [3,3) [1,5) [5,5) [5,5) [0,4) [4,5) [5,5);
    # of the entries only #3 (column 5) has a column in [0, K): rows 2 and 5 add x[5] * 1.
    expected_extra = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close((y.float() - dense_only.float()).cpu(), expected_extra, atol=0.05, rtol=0)


def test_equals_linear_with_reconstructed_weight():
    """The op is a drop-in for F.linear with W = dequantize + residual."""
    N, K = 32, 160
    layer = make_layer(N, K, 2, 32, seed=3)
    W = (ops.dequantize(layer.packed, layer.scale, layer.zero, 2, 32, K)
         + reference.csr_to_dense(layer.row_ptr, layer.col_idx, layer.values, N, K))
    x = random_x(2, K, torch.float32)
    torch.testing.assert_close(gemv(x, layer, "cpu"), torch.nn.functional.linear(x, W), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [2, 3])
def test_opcheck(device, bits):
    """fp32 x on the CPU; fp16 and bf16 x with fp16 scales on CUDA. 2 bits: groups
    of 32; 3 bits: whole rows with K not a multiple of 32."""
    N, K, group_size = (24, 96, 32) if bits == 2 else (24, 100, -1)
    scale_dtype = torch.float32 if device == "cpu" else torch.float16
    args = make_layer(N, K, bits, group_size, scale_dtype=scale_dtype).on(device)
    for dtype in ([torch.float32] if device == "cpu" else [torch.float16, torch.bfloat16]):
        for M in (3, 20):  # the fused kernel; more rows than it takes
            torch.library.opcheck(torch.ops.tacq.mixed_gemv.default, (random_x(M, K, dtype).to(device), *args))
        x3 = random_x(6, K, dtype).reshape(2, 3, K).to(device)  # [..., K]
        torch.library.opcheck(torch.ops.tacq.mixed_gemv.default, (x3, *args))


def check_dense_path(y, x, W):
    """The CPU's path for more than 16 rows: a GEMM in x's dtype on the weight
    rounded to x's dtype (half an ulp of each weight, so half an ulp of
    sum |x|·|W|), accumulated in fp32 (1e-5 of it), y rounded once."""
    ref, acc = exact(x, W)
    eps = torch.finfo(x.dtype).eps
    bound = 0.5 * eps * (ref.abs() + acc) + 1e-5 * acc + 1e-30
    err = (y.double() - ref).abs()
    assert y.dtype == x.dtype and y.shape == ref.shape
    assert bool((err <= bound).all()), f"max error {float(err.max()):.3g}, worst ratio {float((err / bound).max()):.3g}"


def check_cpu_rows(x, layer, W):
    """The CPU op on any number of rows, held to its route's bound: the fused
    kernel (each 16-row slice the same as its own call) up to
    ops.cpu_fused_rows_limit rows, else the dense blocks' GEMM."""
    y = gemv(x, layer, "cpu")
    if x.shape[0] > ops.cpu_fused_rows_limit(x.dtype, W.shape[0], x.shape[-1]):
        check_dense_path(y, x, W)
        return
    check(y, x, W, "cpu")
    assert torch.equal(y, torch.cat([gemv(piece, layer, "cpu") for piece in x.split(ops.MIXED_GEMV_MAX_ROWS)]))


@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", [(600, 4096, 128), (37, 100, -1), (200, 20000, -1), (300, 320, 64)])
def test_more_than_16_rows(device, cpu_isa, N, K, group_size, bits, dtype):
    """M > 16: the fused kernel per 16 rows (on CUDA always, on the CPU up to
    ops.cpu_fused_rows_limit rows); past that limit on the CPU (a prompt),
    blocks of the dense weight (256 rows of K = 4096: N = 600 is 2 blocks and a
    part; 128 rows, the least, of K = 20000) times a GEMM. Strided x, fp16
    scales, and M = 17, 40, 300, which take each CPU route on some ISA path."""
    layer = make_layer(N, K, bits, group_size, scale_dtype=torch.float16, seed=N + bits)
    W = layer.dense()
    for M in (17, 40, 300):
        x = random_x(2 * M, K, dtype, seed=M)[::2]
        if device != "cpu":
            y = gemv(x, layer, device)
            check(y, x, W, device)
            assert torch.equal(y, torch.cat([gemv(p, layer, device) for p in x.split(ops.MIXED_GEMV_MAX_ROWS)]))
        check_cpu_rows(x, layer, W)


def test_cpu_fused_rows_limit(cpu_isa):
    """The CPU route's limit per x dtype and layer size: the fused kernel's
    16 rows on the generic path; on the vector paths more for fp32 x, where the
    fused kernel beats the GEMM (on AVX-512 only for rows of more than 256
    columns, and more the larger the weight: 16 rows up to 2**19 weights, 32 up
    to 2**21, 64 up to 2**23, 128 beyond), and for bf16 x on AVX-512 with BF16
    (there fewer for rows of at most 256 columns than for wider ones), and
    every row count for fp16 x, whose GEMM is slow."""
    avx512 = cpu_isa in ("avx512", "native")
    for K in (192, 256, 257, 4096):
        limits = {dtype: ops.cpu_fused_rows_limit(dtype, 4096, K) for dtype in XTYPES}
        assert all(limit >= ops.MIXED_GEMV_MAX_ROWS for limit in limits.values())
        if cpu_isa == "generic":
            assert set(limits.values()) == {ops.MIXED_GEMV_MAX_ROWS}
        else:
            assert (limits[torch.float32] > ops.MIXED_GEMV_MAX_ROWS) == (K > 256 or not avx512)
            assert limits[torch.float16] == 2 ** 63 - 1
    if avx512:
        assert ops.cpu_fused_rows_limit(torch.float32, 4096, 256) < ops.cpu_fused_rows_limit(torch.float32, 4096, 257)
        sizes = ((192, 512), (512, 1024), (512, 1025), (1024, 2048), (2048, 2048), (2048, 4096), (2048, 4097),
                 (14336, 4096))
        assert [ops.cpu_fused_rows_limit(torch.float32, N, K) for N, K in sizes] == [16, 16, 32, 32, 64, 64, 128, 128]
        if ops.bf16_gemv_supported():  # AVX-512 BF16: the bf16 fused kernel
            assert (ops.cpu_fused_rows_limit(torch.bfloat16, 4096, 256)
                    < ops.cpu_fused_rows_limit(torch.bfloat16, 4096, 257))


def runs_a_gemm(x, layer) -> bool:
    """Whether the CPU op on x took the dense blocks' route: its GEMM is an
    aten::mm call that the profiler sees inside the op; the fused kernel makes none."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        gemv(x, layer, "cpu")
    return any(event.name.startswith("aten::mm") for event in prof.events())


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K", [(96, 192), (96, 256), (96, 320), (1024, 1024), (1024, 4096)])
def test_route_by_rows_and_size(cpu_isa, bits, N, K):
    """x of cpu_fused_rows_limit(dtype, N, K) rows takes the fused kernel and
    one row more the dense blocks, each held to its route's bound
    (check_cpu_rows): fp32 and bf16 x (at K <= 256 on AVX-512 the lower limit,
    for fp32 x on wider rows the limit of the weight's size); fp16 x on the
    vector paths takes the fused kernel at any number of rows (300 here)."""
    layer = make_layer(N, K, bits, 64, scale_dtype=torch.float16, seed=bits + K)
    W = layer.dense()
    for dtype in XTYPES:
        limit = ops.cpu_fused_rows_limit(dtype, N, K)
        cases = ((limit, False), (limit + 1, True)) if limit < 300 else ((300, False),)
        for M, dense in cases:
            x = random_x(M, K, dtype, seed=M)
            assert runs_a_gemm(x, layer) == dense, (dtype, M)
            check_cpu_rows(x, layer, W)


def test_cpu_fused_rows_from_environment(monkeypatch):
    """TACQ_CPU_FUSED_ROWS sets the CPU route's limit for every dtype, read on
    every call: 16 sends 17 rows to the dense blocks, 300 keeps 300 rows on the
    fused kernel, each dtype; other values are refused by name."""
    layer = make_layer(70, 512, 2, 64, scale_dtype=torch.float16, seed=5)
    W = layer.dense()
    for value, M in (("16", 17), ("300", 300)):
        monkeypatch.setenv("TACQ_CPU_FUSED_ROWS", value)
        assert {ops.cpu_fused_rows_limit(dtype, 70, K) for dtype in XTYPES for K in (192, 512)} == {int(value)}
        for dtype in XTYPES:  # 16: every dtype's dense route, fp16's only way there
            check_cpu_rows(random_x(M, 512, dtype, seed=M), layer, W)
    for bad in ("15", "abc", "40x", "-1"):
        monkeypatch.setenv("TACQ_CPU_FUSED_ROWS", bad)
        with pytest.raises(ValueError, match="TACQ_CPU_FUSED_ROWS must be an integer of at least 16"):
            gemv(random_x(20, 512, torch.float32), layer, "cpu")


def test_more_than_16_rows_with_int8_x(device):
    """x_int8 with M > 16: the product of the rounded x (in fp32 on the CPU's
    dense path)."""
    layer = make_layer(70, 1024, 3, 128, scale_dtype=torch.float16, seed=3)
    x = random_x(33, 1024, torch.float32)
    y = ops.mixed_gemv(x.to(device), *layer.on(device), x_int8=True)
    check(y, reference.round_int8_blocks(x), layer.dense(), device)


def _bad_csr(kind):
    row_ptr = torch.tensor([0, 2, 3, 3, 4], dtype=torch.int32)
    col_idx = torch.tensor([1, 5, 0, 63], dtype=torch.int32)
    values = torch.ones(4, dtype=torch.float16)
    if kind == "out_of_range":
        col_idx[3] = 64
    elif kind == "negative":
        col_idx[2] = -1
    elif kind == "unsorted":
        col_idx[:2] = torch.tensor([5, 1])
    elif kind == "duplicate":
        col_idx[:2] = torch.tensor([5, 5])
    elif kind == "end":
        row_ptr[-1] = 3
    elif kind == "decreasing":
        row_ptr[1:4] = torch.tensor([5, 3, 3])
        row_ptr[-1] = 4
    elif kind == "start":
        row_ptr[0] = 1
    elif kind in ("late_out_of_range", "unsorted_across_vector", "unsorted_across_8"):  # row 1 holds 20 entries
        row_ptr = torch.tensor([0, 2, 22, 22, 23], dtype=torch.int32)
        col_idx = torch.tensor([1, 5] + list(range(20, 40)) + [63], dtype=torch.int32)
        values = torch.ones(23, dtype=torch.float16)
        if kind == "late_out_of_range":
            col_idx[20] = 64
        elif kind == "unsorted_across_vector":  # entries 15 and 16 of the row: the two sides of a 16-entry vector
            col_idx[18] = 40
        else:  # entries 7 and 8 of the row: the two sides of an 8-entry (AVX2) vector
            col_idx[10] = col_idx[9]
    return row_ptr, col_idx, values


@pytest.mark.parametrize("kind, match", [
    ("out_of_range", r"col_idx\[3\] = 64 .* out of range"),
    ("negative", r"col_idx\[2\] = -1"),
    ("unsorted", "strictly increasing"),
    ("duplicate", "strictly increasing"),
    ("end", r"row_ptr\[N\] must equal nnz"),
    ("decreasing", "row_ptr must be non-decreasing"),
    ("start", r"row_ptr\[0\] must be 0"),
    ("late_out_of_range", r"col_idx\[20\] = 64 .* out of range"),
    ("unsorted_across_vector", r"strictly increasing within a row, row 1 has 40 then 37"),
    ("unsorted_across_8", r"strictly increasing within a row, row 1 has 27 then 27"),
])
@pytest.mark.parametrize("bits", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bad_csr(cpu_isa, kind, match, bits, dtype):
    """Every CPU kernel checks the columns it reads (the op does not scan them
    first), and so does the dense path of more than 16 rows."""
    packed, scale, zero, *_ = make_layer(4, 64, bits, counts=[0] * 4)[:3]
    for M in (1, 20):
        with pytest.raises(RuntimeError, match=match):
            ops.mixed_gemv(torch.ones(M, 64, dtype=dtype), packed, scale, zero, bits, -1, *_bad_csr(kind))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bad_csr_in_a_worker_thread_of_the_dense_route(dtype):
    """The dense route's threads each make their own rows: a bad column in the
    last thread's rows (row 90 of 96) is raised on the caller with its name."""
    N, K = 96, 64
    packed, scale, zero, *_ = make_layer(N, K, 2, counts=[0] * N)[:3]
    row_ptr = torch.zeros(N + 1, dtype=torch.int32)
    row_ptr[91:] = 1
    col_idx, values = torch.tensor([K], dtype=torch.int32), torch.ones(1, dtype=torch.float16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match=r"col_idx\[0\] = 64 .* out of range"):
            ops.mixed_gemv(torch.ones(300, K, dtype=dtype), packed, scale, zero, 2, -1, row_ptr, col_idx, values)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("make, match", [
    (lambda x, p, s, z, c: ops.mixed_gemv(x[0, 0], p, s, z, 2, -1, *c), r"x must be \[\.\.\., K\] \(at least 1-D\)"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x[:, :32], p, s, z, 2, -1, *c), r"packed.shape\[1\]"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x.int(), p, s, z, 2, -1, *c), "x must have dtype"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 5, -1, *c), "bits must be 2, 3 or 4"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 1, -1, *c), "bits must be 2, 3 or 4"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 2, 48, *c), "group_size must be"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 3, -1, *c), r"packed.shape\[1\]"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 2, -1, c[0], c[1], c[2].float()), "values must have dtype torch.float16"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 2, -1, c[0].long(), c[1], c[2]), "row_ptr must have dtype torch.int32"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 2, -1, c[0], c[1], c[2][:-1]), r"values.shape\[0\] must be nnz"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x, p, s, z, 2, -1, c[0], c[1].to("meta"), c[2]), "col_idx is on meta but packed is on cpu"),
])
def test_bad_input(make, match):
    packed, scale, zero, *csr = make_layer(4, 64, 2, counts=[1, 6, 0, 2])[:6]
    with pytest.raises(RuntimeError, match=match):
        make(torch.ones(1, 64), packed, scale, zero, csr)


def _layer_args():
    layer = make_layer(8, 64, 2, counts=[1] * 8)
    return random_x(1, 64, torch.float32), layer.packed, layer.scale, layer.zero, 2, -1, *layer[3:6]


def test_eager_entry_is_still_the_dispatched_op():
    """ops.mixed_gemv's eager calls take tacq_ext._C's typed entry to the
    dispatcher: dispatch modes, the profiler and meta tensors still see
    tacq::mixed_gemv, with the values torch.ops gives."""
    from torch.utils._python_dispatch import TorchDispatchMode

    args = _layer_args()

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    with Seen() as seen:
        y = ops.mixed_gemv(*args)
    assert torch.ops.tacq.mixed_gemv.default in seen.ops
    assert torch.equal(y, torch.ops.tacq.mixed_gemv.default(*args))
    with torch.profiler.profile() as prof:
        ops.mixed_gemv(*args)
    assert "tacq::mixed_gemv" in {e.name for e in prof.events()}
    y_meta = ops.mixed_gemv(torch.empty(2, 3, 64, device="meta"), *(a.to("meta") if isinstance(a, torch.Tensor) else a
                                                                   for a in args[1:]))
    assert y_meta.shape == (2, 3, 8) and y_meta.device.type == "meta"


def test_torch_function_modes_see_the_op():
    """With a __torch_function__ mode active the call goes through torch.ops,
    whose Python-level handling the mode needs."""
    args = _layer_args()

    class Seen(torch.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.funcs = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.funcs.append(func)
            return func(*args, **(kwargs or {}))

    with Seen() as seen:
        ops.mixed_gemv(*args)
    assert torch.ops.tacq.mixed_gemv.default in seen.funcs

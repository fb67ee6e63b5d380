"""tacq.mixed_gemv: x (dequant + CSR residual)^T against the reference."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import has_kernel, random_csr

TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def layer(N, K, bits, group_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    codes, scale, zero = ops.quantize(w, bits, group_size)
    return ops.pack(codes, bits), scale, zero, g


def expected(x, packed, scale, zero, bits, group_size, csr):
    """x @ (dequantize + residual)^T in fp64, from the reference ops."""
    N, K = packed.shape[0], x.shape[1]
    W = reference.dequantize(packed.cpu(), scale.cpu(), zero.cpu(), bits, group_size, K).double()
    W += reference.csr_to_dense(*[t.cpu() for t in csr], N, K).double()
    return (x.cpu().double() @ W.T).float()


def assert_close(y, ref, dtype):
    rtol, atol = TOLERANCE[dtype]
    scale = ref.abs().max().clamp(min=1.0)
    torch.testing.assert_close(y.cpu().float() / scale, ref / scale, rtol=rtol, atol=atol)


# Beyond the edge cases, the shapes reach each way the AVX-512 lane kernels
# (chunks of 128 4-bit, 256 2-bit or 512 3-bit codes; tiles of 4 rows) apply
# group scales: groups of whole chunks (-1, 128/256, 512, and K = 1056 with a
# last chunk of one 32-code block), several groups per chunk (32, 64, and
# 320 = 5 x 64 with a part-filled last chunk), and groups that straddle chunks
# (96, 160).
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (5, 31, -1), (3, 33, 33), (8, 64, 32),
                                            (6, 100, -1), (4, 256, 128), (16, 4096, -1), (9, 4096, 128),
                                            (2, 9000, -1),  # K spans several L1 segments of x
                                            (5, 288, 96), (7, 1024, 512), (4, 320, 64), (3, 1600, 160),
                                            (5, 1056, 1056)])
@pytest.mark.parametrize("M", [1, 3, 4, 5, 16])
def test_matches_reference_fp32(cpu_isa, bits, N, K, group_size, M):
    packed, scale, zero, g = layer(N, K, bits, group_size, seed=N * K + bits)
    csr = random_csr(N, K, 0.05, g)
    x = torch.randn(M, K, generator=g)
    y = ops.mixed_gemv(x, packed, scale, zero, bits, group_size, *csr)
    assert y.shape == (M, N) and y.dtype == torch.float32
    assert_close(y, expected(x, packed, scale, zero, bits, group_size, csr), torch.float32)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 32, -1), (4, 300, -1), (9, 4096, 128), (6, 1024, 512),
                                            (5, 288, 96), (7, 320, 64), (3, 14336, -1), (5, 1600, 160),
                                            (6, 1056, 1056)])
@pytest.mark.parametrize("M", [1, 5, 16])
def test_matches_reference_bf16(cpu_isa, bits, N, K, group_size, M):
    """bf16 x: the vdpbf16ps kernel where the CPU has AVX-512 BF16."""
    packed, scale, zero, g = layer(N, K, bits, group_size, seed=N * K + bits + 7)
    csr = random_csr(N, K, 0.05, g)
    x = torch.randn(M, K, generator=g).bfloat16()
    y = ops.mixed_gemv(x, packed, scale, zero, bits, group_size, *csr)
    assert y.shape == (M, N) and y.dtype == torch.bfloat16
    assert_close(y, expected(x.float(), packed, scale, zero, bits, group_size, csr), torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_dtypes(device, dtype, scale_dtype):
    if not has_kernel("mixed_gemv", device):
        pytest.skip(f"no mixed_gemv kernel for {device}")
    packed, scale, zero, g = layer(12, 96, 3, 32, seed=1)
    scale, zero = scale.to(scale_dtype), zero.to(scale_dtype)
    csr = random_csr(12, 96, 0.1, g)
    x = torch.randn(4, 96, generator=g).to(dtype)
    y = ops.mixed_gemv(x.to(device), packed.to(device), scale.to(device), zero.to(device), 3, 32,
                       *[t.to(device) for t in csr])
    assert y.dtype == dtype
    assert_close(y, expected(x.float(), packed, scale, zero, 3, 32, csr), dtype)


@pytest.mark.parametrize("case", ["empty", "full_row", "one_row_holds_all", "empty_rows"])
def test_residual_shapes(cpu_isa, case):
    N, K, bits = 7, 70, 2
    packed, scale, zero, g = layer(N, K, bits, -1, seed=2)
    csr = {
        "empty": lambda: random_csr(N, K, 0.0, g),
        "full_row": lambda: random_csr(N, K, 0.02, g, full_row=3),
        "one_row_holds_all": lambda: random_csr(N, K, 0.0, g, full_row=6),
        "empty_rows": lambda: random_csr(N, K, 0.3, g, empty_rows=(0, 2, 6)),
    }[case]()
    x = torch.randn(2, K, generator=g)
    y = ops.mixed_gemv(x, packed, scale, zero, bits, -1, *csr)
    assert_close(y, expected(x, packed, scale, zero, bits, -1, csr), torch.float32)


def test_equals_linear_with_reconstructed_weight():
    """The op is a drop-in for F.linear with W = dequantize + residual."""
    N, K = 32, 160
    packed, scale, zero, g = layer(N, K, 2, 32, seed=3)
    csr = random_csr(N, K, 0.01, g)
    W = ops.dequantize(packed, scale, zero, 2, 32, K) + reference.csr_to_dense(*csr, N, K)
    x = torch.randn(2, K, generator=g)
    torch.testing.assert_close(ops.mixed_gemv(x, packed, scale, zero, 2, 32, *csr),
                               torch.nn.functional.linear(x, W), rtol=1e-4, atol=1e-4)


def test_opcheck(device):
    if not has_kernel("mixed_gemv", device):
        pytest.skip(f"no mixed_gemv kernel for {device}")
    packed, scale, zero, g = layer(8, 64, 2, 32)
    csr = random_csr(8, 64, 0.1, g)
    x = torch.randn(2, 64, generator=g).to(torch.bfloat16 if device == "cuda" else torch.float32)
    args = (x, packed, scale, zero, 2, 32) + csr
    torch.library.opcheck(torch.ops.tacq.mixed_gemv.default, tuple(
        a.to(device) if isinstance(a, torch.Tensor) else a for a in args))


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
    elif kind in ("late_out_of_range", "unsorted_across_vector"):  # row 1 holds 20 entries
        row_ptr = torch.tensor([0, 2, 22, 22, 23], dtype=torch.int32)
        col_idx = torch.tensor([1, 5] + list(range(20, 40)) + [63], dtype=torch.int32)
        values = torch.ones(23, dtype=torch.float16)
        if kind == "late_out_of_range":
            col_idx[20] = 64
        else:  # entries 15 and 16 of the row: the last of one 16-entry vector, the first of the next
            col_idx[18] = 40
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
])
@pytest.mark.parametrize("bits", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bad_csr(cpu_isa, kind, match, bits, dtype):
    """Every kernel checks the columns it reads (the op does not scan them first)."""
    packed, scale, zero, _ = layer(4, 64, bits, -1)
    with pytest.raises(RuntimeError, match=match):
        ops.mixed_gemv(torch.ones(1, 64, dtype=dtype), packed, scale, zero, bits, -1, *_bad_csr(kind))


@pytest.mark.parametrize("make, match", [
    (lambda x, p, s, z, c: ops.mixed_gemv(x[:0], p, s, z, 2, -1, *c), "x must have 1 to 16 rows"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x.expand(17, 64), p, s, z, 2, -1, *c), "x must have 1 to 16 rows"),
    (lambda x, p, s, z, c: ops.mixed_gemv(x[0], p, s, z, 2, -1, *c), "x must be 2-D"),
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
    packed, scale, zero, g = layer(4, 64, 2, -1)
    csr = random_csr(4, 64, 0.1, g)
    with pytest.raises(RuntimeError, match=match):
        make(torch.ones(1, 64), packed, scale, zero, csr)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(7, 100, -1), (5, 4096, 128), (3, 64, 32), (9, 33, -1)])
@pytest.mark.parametrize("M", [1, 2, 3, 5, 16])
def test_bf16_activations_exact_products(cpu_isa, bits, N, K, group_size, M):
    """bf16 x takes the AVX-512 BF16 kernel where the CPU has it:
    the result must be the fp32-accumulated product rounded once to bf16."""
    packed, scale, zero, g = layer(N, K, bits, group_size, seed=M + K)
    csr = random_csr(N, K, 0.05, g)
    x = torch.randn(M, K, generator=g).bfloat16()
    y = ops.mixed_gemv(x, packed, scale, zero, bits, group_size, *csr).float()
    ref = expected(x.float(), packed, scale, zero, bits, group_size, csr)
    scale_y = ref.abs().max()
    torch.testing.assert_close(y, ref, rtol=2**-8, atol=1e-4 * float(scale_y))

"""CUDA pack / unpack / dequantize / mixed_gemv against the CPU kernels and the
pure-torch references on the same inputs: all bit widths, fp16, bf16
and fp32 x, M = 1..16, K not a multiple of 32, N = 1, rows with no and with K residual
entries, misaligned buffers, K large enough to tile x, garbage CSR content
(memory safety), opcheck, and bad-input messages identical to the fake kernels'.
"""

import pytest
import torch

from tacq_ext import ops, reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device: the CUDA kernels are compile-checked only (tests/test_cuda_compile.py)",
)

BITS = [2, 3, 4]
XTYPES = [torch.float16, torch.bfloat16, torch.float32]


def make_layer(N, K, bits, group_size=-1, counts=None, scale_dtype=torch.float32, seed=0):
    """Random packed layer on the CPU: (packed, scale, zero, row_ptr, col_idx, values).

    counts: residual entries per row (sorted distinct columns); default ~1 % of K.
    """
    g = torch.Generator().manual_seed(seed)
    G, _ = reference.num_groups(K, group_size)
    codes = torch.randint(0, 2**bits, (N, K), generator=g).to(torch.uint8)
    scale = (torch.rand(N, G, generator=g) * 0.05 + 0.01).to(scale_dtype)
    zero = torch.randint(0, 2**bits, (N, G), generator=g).float().to(scale_dtype)
    if counts is None:
        counts = torch.randint(0, max(1, K // 50) + 1, (N,), generator=g).tolist()
    cols = [torch.randperm(K, generator=g)[:c].sort().values for c in counts]
    row_ptr = torch.tensor([0] + list(torch.tensor(counts).cumsum(0).tolist()), dtype=torch.int32)
    col_idx = torch.cat(cols).to(torch.int32) if cols else torch.zeros(0, dtype=torch.int32)
    values = (torch.randn(int(row_ptr[-1]), generator=g) * 0.5).to(torch.float16)
    return reference.pack(codes, bits), scale, zero, row_ptr, col_idx, values


def to(device, tensors):
    return tuple(t.to(device) for t in tensors)


def random_x(M, K, dtype, seed=1):
    return torch.randn(M, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


def assert_gemv_close(y, x, layer, bits, group_size):
    """|y - x·Wᵀ| within one ulp of y's dtype of the exact (fp64) result plus the
    fp32 accumulation error of sum |x|·|W|."""
    packed, scale, zero, row_ptr, col_idx, values = to("cpu", layer)
    K = x.shape[1]
    W = reference.dequantize(packed, scale, zero, bits, group_size, K).double()
    W += reference.csr_to_dense(row_ptr, col_idx, values, packed.shape[0], K).double()
    xd = x.cpu().double()
    exact = xd @ W.T
    bound = torch.finfo(y.dtype).eps * exact.abs() + 1e-5 * (xd.abs() @ W.abs().T) + 1e-30
    err = (y.cpu().double() - exact).abs()
    assert y.dtype == x.dtype and y.shape == exact.shape
    assert bool((err <= bound).all()), f"max error {float(err.max()):.3g}, worst ratio {float((err / bound).max()):.3g}"


def gemv_cuda_and_cpu(x, layer, bits, group_size):
    y_cuda = ops.mixed_gemv(x.cuda(), *to("cuda", layer[:3]), bits, group_size, *to("cuda", layer[3:]))
    y_cpu = ops.mixed_gemv(x, *layer[:3], bits, group_size, *layer[3:])
    return y_cuda, y_cpu


# ----------------------------------------------------------------- pack / unpack


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K", [(1, 1), (3, 31), (2, 33), (5, 96), (7, 257), (33, 4096)])
def test_pack_unpack_cuda_equal_cpu_and_reference(bits, N, K):
    codes = torch.randint(0, 2**bits, (N, K), generator=torch.Generator().manual_seed(N * K)).to(torch.uint8)
    packed = ops.pack(codes.cuda(), bits)
    assert torch.equal(packed.cpu(), ops.pack(codes, bits))
    assert torch.equal(packed.cpu(), reference.pack(codes, bits))
    assert torch.equal(ops.unpack(packed, bits, K).cpu(), codes)


def test_pack_unpack_empty_rows():
    codes = torch.zeros(0, 40, dtype=torch.uint8, device="cuda")
    assert ops.pack(codes, 3).shape == (0, 6)
    assert ops.unpack(torch.zeros(0, 6, dtype=torch.int32, device="cuda"), 3, 40).shape == (0, 40)


# ----------------------------------------------------------------- dequantize


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (3, 100, -1), (4, 128, 32), (5, 192, 64), (17, 4096, 128)])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("out_dtype", [None, torch.float16, torch.bfloat16])
def test_dequantize_bitwise_equal_reference(bits, N, K, group_size, scale_dtype, out_dtype):
    packed, scale, zero, *_ = make_layer(N, K, bits, group_size, counts=[0] * N, scale_dtype=scale_dtype)
    ours = ops.dequantize(*to("cuda", (packed, scale, zero)), bits, group_size, K, out_dtype)
    expected = reference.dequantize(packed, scale, zero, bits, group_size, K, out_dtype)
    assert ours.dtype == expected.dtype
    assert torch.equal(ours.cpu(), expected)
    assert torch.equal(ours.cpu(), ops.dequantize(packed, scale, zero, bits, group_size, K, out_dtype))


def test_dequantize_misaligned_output_rows():
    """K * 2 bytes not a multiple of 16: the element-wise store path."""
    packed, scale, zero, *_ = make_layer(6, 75, 3, counts=[0] * 6)
    ours = ops.dequantize(*to("cuda", (packed, scale, zero)), 3, -1, 75, torch.float16)
    assert torch.equal(ours.cpu(), reference.dequantize(packed, scale, zero, 3, -1, 75, torch.float16))


# ----------------------------------------------------------------- mixed_gemv


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dtype", XTYPES)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 8, 9, 16])
@pytest.mark.parametrize("N,K,group_size", [(1, 64, -1), (37, 100, -1), (48, 256, 32), (70, 1024, 128)])
def test_mixed_gemv_cuda_vs_cpu_and_reference(bits, dtype, M, N, K, group_size):
    layer = make_layer(N, K, bits, group_size, seed=M)
    x = random_x(M, K, dtype)
    y_cuda, y_cpu = gemv_cuda_and_cpu(x, layer, bits, group_size)
    assert_gemv_close(y_cuda, x, layer, bits, group_size)
    assert_gemv_close(y_cpu, x, layer, bits, group_size)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("M", [1, 16])
def test_mixed_gemv_zero_and_full_residual_rows(bits, M):
    """Rows with no residual entries next to rows with K of them (every column)."""
    N, K = 20, 300
    counts = [0, K, 0, 1, K, 0] + [3] * (N - 6)
    layer = make_layer(N, K, bits, counts=counts, scale_dtype=torch.float16)
    x = random_x(M, K, torch.float16)
    y_cuda, y_cpu = gemv_cuda_and_cpu(x, layer, bits, -1)
    assert_gemv_close(y_cuda, x, layer, bits, -1)
    assert_gemv_close(y_cpu, x, layer, bits, -1)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("M", [1, 4, 16])
def test_mixed_gemv_x_in_several_k_tiles(bits, M):
    """K large enough that x does not fit one shared-memory tile for M > 1."""
    N, K = 40, 28672 if M == 4 else 8192 + 96
    layer = make_layer(N, K, bits, seed=3)
    x = random_x(M, K, torch.bfloat16)
    y = ops.mixed_gemv(x.cuda(), *to("cuda", layer[:3]), bits, -1, *to("cuda", layer[3:]))
    assert_gemv_close(y, x, layer, bits, -1)


@pytest.mark.parametrize("bits", BITS)
def test_mixed_gemv_misaligned_buffers(bits):
    """packed and x starting 4 / 2 bytes past an alignment boundary (scalar load paths)."""
    N, K, M = 9, 160, 3
    layer = make_layer(N, K, bits)
    words = layer[0].numel()
    packed = torch.empty(words + 1, dtype=torch.int32, device="cuda")[1:].view(layer[0].shape)
    packed.copy_(layer[0])
    x = random_x(M, K, torch.float16)
    xm = torch.empty(M * K + 1, dtype=torch.float16, device="cuda")[1:].view(M, K)
    xm.copy_(x)
    y = ops.mixed_gemv(xm, packed, *to("cuda", layer[1:3]), bits, -1, *to("cuda", layer[3:]))
    assert_gemv_close(y, x, layer, bits, -1)


def test_mixed_gemv_non_contiguous_x():
    N, K, M = 16, 128, 4
    layer = make_layer(N, K, 2)
    x = random_x(K, M, torch.float16).t()
    y = ops.mixed_gemv(x.cuda(), *to("cuda", layer[:3]), 2, -1, *to("cuda", layer[3:]))
    assert_gemv_close(y, x.contiguous(), layer, 2, -1)


def test_mixed_gemv_deterministic():
    layer = to("cuda", make_layer(64, 2048, 3))
    x = random_x(5, 2048, torch.bfloat16).cuda()
    a = ops.mixed_gemv(x, *layer[:3], 3, -1, *layer[3:])
    b = ops.mixed_gemv(x, *layer[:3], 3, -1, *layer[3:])
    assert torch.equal(a, b)


def test_mixed_gemv_empty_output_rows():
    layer = to("cuda", make_layer(0, 64, 2, counts=[]))
    y = ops.mixed_gemv(torch.ones(2, 64, dtype=torch.float16, device="cuda"), *layer[:3], 2, -1, *layer[3:])
    assert y.shape == (2, 0)


def test_mixed_gemv_garbage_csr_is_memory_safe():
    """Row pointers out of [0, nnz] or decreasing and columns outside [0, K) are
    not checked on the device; the kernel must still read nothing out of bounds
    (run under compute-sanitizer to prove it) and skip what it cannot use."""
    N, K = 8, 96
    packed, scale, zero, *_ = to("cuda", make_layer(N, K, 2, counts=[0] * N))
    nnz = 5
    row_ptr = torch.tensor([-7, 3, 1, 2**30, 5, -1, 4, 9, 2], dtype=torch.int32, device="cuda")
    col_idx = torch.tensor([-1, K, 2**31 - 1, 5, -(2**31)], dtype=torch.int32, device="cuda")
    values = torch.ones(nnz, dtype=torch.float16, device="cuda")
    x = torch.ones(1, K, dtype=torch.float16, device="cuda")
    y = ops.mixed_gemv(x, packed, scale, zero, 2, -1, row_ptr, col_idx, values)
    torch.cuda.synchronize()
    dense_only = ops.mixed_gemv(x, packed, scale, zero, 2, -1, torch.zeros(N + 1, dtype=torch.int32, device="cuda"),
                                col_idx[:0], values[:0])
    # Clamped to [0, nnz] the rows cover entries [0,3) [3,3) [1,5) [5,5) [5,5) [0,4) [4,5) [5,5);
    # of the entries only #3 (column 5) has a column in [0, K): rows 2 and 5 add x[5] * 1.
    expected_extra = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close((y.float() - dense_only.float()).cpu(), expected_extra, atol=0.05, rtol=0)


# ----------------------------------------------------------------- opcheck


@pytest.mark.parametrize("bits", [2, 3])
def test_opcheck_cuda(bits):
    N, K = 24, 100
    packed, scale, zero, row_ptr, col_idx, values = to("cuda", make_layer(N, K, bits, scale_dtype=torch.float16))
    codes = ops.unpack(packed, bits, K)
    torch.library.opcheck(torch.ops.tacq.pack.default, (codes, bits))
    torch.library.opcheck(torch.ops.tacq.unpack.default, (packed, bits, K))
    torch.library.opcheck(torch.ops.tacq.dequantize.default, (packed, scale, zero, bits, -1, K, torch.bfloat16))
    x = random_x(3, K, torch.float16).cuda()
    torch.library.opcheck(torch.ops.tacq.mixed_gemv.default,
                          (x, packed, scale, zero, bits, -1, row_ptr, col_idx, values))


# ----------------------------------------------------------------- bad input


def _zeros_layer(N, K, bits, device, G=1):
    return (torch.zeros(N, (K + 31) // 32 * bits, dtype=torch.int32, device=device),
            torch.ones(N, G, device=device), torch.zeros(N, G, device=device),
            torch.zeros(N + 1, dtype=torch.int32, device=device),
            torch.zeros(0, dtype=torch.int32, device=device), torch.zeros(0, dtype=torch.float16, device=device))


def _gemv(x, layer, bits=2, group_size=-1):
    return ops.mixed_gemv(x, *layer[:3], bits, group_size, *layer[3:])


BAD = {
    "rows": lambda d: _gemv(torch.zeros(17, 64, dtype=torch.float16, device=d), _zeros_layer(4, 64, 2, d)),
    "K": lambda d: _gemv(torch.zeros(1, 60, dtype=torch.float16, device=d), _zeros_layer(4, 96, 2, d)),
    "bits": lambda d: _gemv(torch.zeros(1, 64, dtype=torch.float16, device=d), _zeros_layer(4, 64, 2, d), bits=5),
    "group": lambda d: _gemv(torch.zeros(1, 64, dtype=torch.float16, device=d), _zeros_layer(4, 64, 2, d), group_size=48),
    "row_ptr": lambda d: _gemv(torch.zeros(1, 64, dtype=torch.float16, device=d),
                               _zeros_layer(4, 64, 2, d)[:3] + _zeros_layer(3, 64, 2, d)[3:]),
    "values dtype": lambda d: _gemv(torch.zeros(1, 64, dtype=torch.float16, device=d),
                                    _zeros_layer(4, 64, 2, d)[:5] + (torch.zeros(0, device=d),)),
    "dequantize scale shape": lambda d: ops.dequantize(*_zeros_layer(4, 64, 2, d)[:1],
                                                       *_zeros_layer(4, 64, 2, d, G=2)[1:3], 2, -1, 64),
    "dequantize out dtype": lambda d: ops.dequantize(*_zeros_layer(4, 64, 2, d)[:3], 2, -1, 64, torch.int32),
    "x dtype": lambda d: _gemv(torch.zeros(1, 64, dtype=torch.float64, device=d), _zeros_layer(4, 64, 2, d)),
    "pack code range": lambda d: ops.pack(torch.full((2, 8), 4, dtype=torch.uint8, device=d), 2),
    "unpack width": lambda d: ops.unpack(torch.zeros(2, 3, dtype=torch.int32, device=d), 2, 64),
}


def _message(fn, device):
    with pytest.raises(RuntimeError) as info:
        fn(device)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_cuda_and_cpu_raise_the_same_message(case):
    cuda = _message(BAD[case], "cuda")
    assert cuda.startswith("tacq."), cuda
    assert cuda == _message(BAD[case], "cpu")
    if case != "pack code range":  # the fake kernel cannot read code values
        assert cuda == _message(BAD[case], "meta")


def test_mixed_devices_rejected():
    layer = _zeros_layer(4, 64, 2, "cuda")
    with pytest.raises(RuntimeError, match=r"tacq.mixed_gemv: x is on cpu but packed is on cuda"):
        _gemv(torch.zeros(1, 64, dtype=torch.float16), layer)
    with pytest.raises(RuntimeError, match=r"tacq.mixed_gemv: row_ptr is on cpu but packed is on cuda"):
        _gemv(torch.zeros(1, 64, dtype=torch.float16, device="cuda"), layer[:3] + to("cpu", layer[3:4]) + layer[4:])

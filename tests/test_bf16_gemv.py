"""tacq.bf16_gemv (a CPU kernel for AVX-512 BF16: F.linear of bf16 x, at most
16 rows, and a bf16 weight) against the fp64 reference on random and
adversarial shapes, with opcheck, the argument errors, and Bf16GemvLinear,
the module the loaders put on a quantized model's unquantized linears."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tacq_ext
from tacq_ext import Bf16GemvLinear, ops, reference, use_bf16_gemv

needs_kernel = pytest.mark.skipif(not ops.bf16_gemv_supported(), reason="this CPU lacks AVX-512 BF16")
BF16 = torch.bfloat16


def bf16(gen, *shape, scale=1.0):
    return (scale * torch.randn(*shape, generator=gen)).to(BF16)


def check(y, x, w):
    """|y - x·wᵀ| within half a bf16 ulp of the exact (fp64) result plus the
    error of fp32 sums: the kernel adds K/16 terms per lane (pairs of exact
    products), then 16 lanes, so (K/16 + 5) roundings of 2^-24 each of
    sum |x|·|w|."""
    K = x.shape[-1]
    rows = x.reshape(-1, K).double()
    ref = (rows @ w.double().T).reshape(*x.shape[:-1], w.shape[0])
    acc = (rows.abs() @ w.double().abs().T).reshape(ref.shape)
    summing = (K / 16 + 5) * 2.0**-24 * acc
    bound = 0.5 * torch.finfo(BF16).eps * (ref.abs() + summing) + summing + 1e-30
    err = (y.double() - ref).abs()
    assert y.dtype == BF16 and y.shape == ref.shape
    assert bool((err <= bound).all()), f"max error {float(err.max()):.3g}, worst ratio {float((err / bound).max()):.3g}"


@needs_kernel
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 7, 8, 13, 16])
@pytest.mark.parametrize("N,K", [(1, 1), (3, 31), (4, 32), (5, 33), (9, 100), (37, 64), (64, 2048), (130, 4099)])
def test_bf16_gemv_matches_reference(gen, M, N, K):
    x, w = bf16(gen, M, K), bf16(gen, N, K, scale=0.05)
    check(ops.bf16_gemv(x, w), x, w)


@needs_kernel
@pytest.mark.parametrize("shape", [(2, 3, 40), (1, 1, 1, 65), (4, 0, 8), (0, 8), (96,)], ids=str)
def test_bf16_gemv_takes_any_leading_shape(gen, shape):
    x, w = bf16(gen, *shape), bf16(gen, 6, shape[-1])
    y = ops.bf16_gemv(x, w)
    assert y.shape == (*shape[:-1], 6)
    check(y, x, w)


@needs_kernel
def test_bf16_gemv_reads_strided_rows_and_empty_shapes(gen):
    big, w = bf16(gen, 8, 2 * 70), bf16(gen, 11, 70)
    for x in (big[::2, :70], big[:, ::2], big[:5, 3:73]):  # row stride, column stride, offset
        check(ops.bf16_gemv(x, w), x, w)
    assert ops.bf16_gemv(bf16(gen, 3, 5), bf16(gen, 0, 5)).shape == (3, 0)
    assert torch.equal(ops.bf16_gemv(bf16(gen, 2, 0), bf16(gen, 4, 0)), torch.zeros(2, 4, dtype=BF16))


@needs_kernel
def test_bf16_gemv_propagates_nan_and_inf_and_flushes_subnormals(gen):
    x, w = bf16(gen, 3, 70), bf16(gen, 5, 70)
    x[0, 7] = float("nan")
    x[1, 69] = float("inf")  # in the masked tail step
    y, ref = ops.bf16_gemv(x, w), F.linear(x.float(), w.float())
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
    check(y[2:], x[2:], w)
    # bf16 subnormals count as zero (vdpbf16ps), as documented and as the oracle has it
    tiny = torch.full((2, 40), 2.0**-130, dtype=BF16)
    ones = torch.full((1, 40), 2.0**100, dtype=BF16)
    assert torch.equal(ops.bf16_gemv(ones, tiny), torch.zeros(1, 2, dtype=BF16))
    assert torch.equal(reference.bf16_gemv(ones, tiny), torch.zeros(1, 2, dtype=BF16))


@needs_kernel
def test_bf16_gemv_opcheck(gen):
    torch.library.opcheck(torch.ops.tacq.bf16_gemv.default, (bf16(gen, 2, 3, 40), bf16(gen, 9, 40)))
    torch.library.opcheck(torch.ops.tacq.bf16_gemv.default, (bf16(gen, 1, 64), bf16(gen, 5, 64)))


@pytest.mark.parametrize("make, message", [
    (lambda g: (torch.randn(2, 8), bf16(g, 3, 8)), "x must have dtype torch.bfloat16, got torch.float32"),
    (lambda g: (bf16(g, 2, 8), torch.randn(3, 8).half()), "weight must have dtype torch.bfloat16"),
    (lambda g: (bf16(g, 2, 8), bf16(g, 8)), "weight must be 2-D"),
    (lambda g: (bf16(g, 2, 8), bf16(g, 8, 3).T), "weight must be contiguous"),
    (lambda g: (bf16(g, 2, 8), bf16(g, 3, 9)), r"weight.shape\[1\] must be K \(x.shape\[-1\]\) = 8, got 9"),
    (lambda g: (bf16(g, 17, 8), bf16(g, 3, 8)), "x must have at most 16 rows .* got 17"),
    (lambda g: (bf16(g, 2, 9, 8), bf16(g, 3, 8)), "x must have at most 16 rows .* got 18"),
    (lambda g: (torch.tensor(1.0, dtype=BF16), bf16(g, 3, 1)), "x must be \\[..., K\\]"),
])
def test_bf16_gemv_names_the_bad_argument(gen, make, message):
    with pytest.raises(RuntimeError, match=f"tacq.bf16_gemv: .*{message}"):
        ops.bf16_gemv(*make(gen))


def test_bf16_gemv_meta_tensors_get_the_same_checks():
    y = ops.bf16_gemv(torch.empty(2, 3, 8, dtype=BF16, device="meta"), torch.empty(5, 8, dtype=BF16, device="meta"))
    assert y.shape == (2, 3, 5) and y.dtype == BF16
    with pytest.raises(RuntimeError, match="at most 16 rows"):
        ops.bf16_gemv(torch.empty(20, 8, dtype=BF16, device="meta"), torch.empty(5, 8, dtype=BF16, device="meta"))


def test_bf16_gemv_refuses_a_cpu_without_avx512_bf16(gen, monkeypatch):
    monkeypatch.setenv("TACQ_CPU_ISA", "avx2")
    assert not ops.bf16_gemv_supported()
    with pytest.raises(RuntimeError, match="tacq.bf16_gemv: needs a CPU with AVX-512 BF16 .*use F.linear"):
        ops.bf16_gemv(bf16(gen, 1, 8), bf16(gen, 3, 8))


# --------------------------------------------------------------------------- Bf16GemvLinear


def test_bf16_gemv_linear_shares_the_parameters_and_state_dict(gen):
    linear = nn.Linear(40, 7, bias=True).to(BF16)
    layer = Bf16GemvLinear.from_linear(linear)
    assert layer.weight is linear.weight and layer.bias is linear.bias and isinstance(layer, nn.Linear)
    assert list(layer.state_dict()) == list(linear.state_dict())


@pytest.mark.parametrize("rows", [1, ops.MIXED_GEMV_MAX_ROWS, ops.MIXED_GEMV_MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [False, True])
def test_bf16_gemv_linear_routes_small_bf16_batches_to_the_kernel(gen, rows, bias, monkeypatch):
    linear = nn.Linear(70, 9, bias=bias).to(BF16)
    layer = Bf16GemvLinear.from_linear(linear)
    calls = []
    kernel = ops.bf16_gemv
    monkeypatch.setattr(ops, "bf16_gemv", lambda x, w: calls.append(x.shape) or kernel(x, w))
    x = bf16(gen, 1, rows, 70)
    y = layer(x)
    expect_kernel = rows <= ops.MIXED_GEMV_MAX_ROWS and ops.bf16_gemv_supported()
    assert len(calls) == int(expect_kernel)
    if expect_kernel:
        want = kernel(x, linear.weight) + (linear.bias if bias else 0)
        assert torch.equal(y, want)
    else:
        assert torch.equal(y, F.linear(x, linear.weight, linear.bias))
    layer.float()
    assert torch.equal(layer(x.float()), F.linear(x.float(), linear.weight, linear.bias))  # fp32: torch's


def test_use_bf16_gemv_swaps_plain_linears_only():
    model = nn.Sequential(nn.Linear(64, 8), tacq_ext.QuantizedLinear(64, 8, 2, -1), nn.Sequential(nn.Linear(8, 3)))
    tied = model[0].weight
    assert use_bf16_gemv(model) == 2
    assert isinstance(model[0], Bf16GemvLinear) and isinstance(model[2][0], Bf16GemvLinear)
    assert type(model[1]) is tacq_ext.QuantizedLinear and model[0].weight is tied
    assert use_bf16_gemv(model) == 0


@needs_kernel
def test_bf16_gemv_linear_compiles_without_graph_breaks(gen):
    layer = Bf16GemvLinear.from_linear(nn.Linear(96, 33).to(BF16))
    x = bf16(gen, 1, 1, 96)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), layer(x))
    rows6 = bf16(gen, 2, 3, 96)
    assert torch.equal(compiled(rows6), layer(rows6))

"""tacq.mixed_gemv with x_int8=True: x rounded to int8 per 32-value block
(reference.round_int8_blocks), then the exact formula, on the CPU (every ISA
path: the AVX2 kernel multiplies int8, the others read the rounded x) and on
CUDA. Bit widths, x dtypes, M = 1..16, every kind of group, rows with and
without residual entries, rounding ties and all-zero blocks, opcheck, NaN."""

import pytest
import torch

from tacq_ext import ops, reference

from test_mixed_gemv import BITS, XTYPES, _bad_csr, check, exact, make_layer, random_x


def gemv_int8(x, layer, device):
    return ops.mixed_gemv(x.to(device), *layer.on(device), x_int8=True)


def check_int8(x, layer, device, W=None):
    """Against the fp64 product of the rounded x, with check()'s bound; on CUDA
    the CPU op on the same inputs too."""
    W = layer.dense() if W is None else W
    rows = exact(reference.round_int8_blocks(x), W)
    for where in {device, "cpu"}:
        check(gemv_int8(x, layer, where), x, W, where, rows)


# Each way the int8 kernel applies weight scales to its chunks (128 2-bit, 256
# 3-bit or 64 4-bit codes): whole rows, groups of whole chunks (256, 512),
# several groups per chunk (32, 64, 128 for 3 bits), groups that straddle
# chunks (96, 160); K < 32, K not a multiple of 32 or of a chunk, a part-filled
# last chunk (1056, 320).
SHAPES = [(1, 1, -1), (5, 31, -1), (9, 33, -1), (3, 33, 33), (8, 64, 32), (37, 100, -1), (4, 320, 64),
          (5, 288, 96), (3, 1600, 160), (7, 1024, 512), (6, 1024, 256), (70, 1024, 128),
          (5, 1056, 1056), (3, 4096, 128), (2, 9000, -1)]


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16], ids=["f32_scales", "f16_scales"])
@pytest.mark.parametrize("dtype", XTYPES, ids=str)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", SHAPES)
def test_matches_reference(device, cpu_isa, N, K, group_size, bits, dtype, scale_dtype):
    """M = 5: a 4-row tile of activation rows and a 1-row remainder. fp16
    scales and zeros: the int8 kernels read them as stored."""
    layer = make_layer(N, K, bits, group_size, scale_dtype=scale_dtype, seed=N * K + bits)
    check_int8(random_x(5, K, dtype, seed=K), layer, device)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("N,K,group_size", [(3, 33, 33), (70, 1024, 128), (8, 2000, -1)])
def test_every_row_count(device, cpu_isa, N, K, group_size, bits):
    layer = make_layer(N, K, bits, group_size, seed=N + K + bits)
    W = layer.dense()
    x = random_x(16, K, torch.float32)
    for M in range(1, 17):
        check_int8(x[:M], layer, device, W)


def test_rounding_ties_and_zero_blocks(device, cpu_isa):
    """W = identity (scale 1, zero 0, codes 1 on the diagonal), so y = the
    rounded x itself: ties round to even (x * 127/amax = 0.5, 1.5, 2.5, -2.5),
    an all-zero block stays zero, a tiny block keeps its relative precision,
    and so does a block of denormals (127 / amax overflows to infinity there
    unless the block is lifted by 2^64 first: NaN came out before).
    The tiny blocks go in calls of their own: the AVX-512 kernels' error is
    relative to the sum of |x| over a row (mixed_gemv_lanes.h), which the
    first call's block would dwarf."""
    K = 96
    codes = torch.eye(K, dtype=torch.uint8)
    layer_args = (ops.pack(codes, 2).to(device), torch.ones(K, 1, device=device), torch.zeros(K, 1, device=device),
                  2, -1, torch.zeros(K + 1, dtype=torch.int32, device=device),
                  torch.zeros(0, dtype=torch.int32, device=device), torch.zeros(0, dtype=torch.float16, device=device))
    ties, tiny, denormal = torch.zeros(1, K), torch.zeros(1, K), torch.zeros(1, K)
    ties[0, :6] = torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, 3.0])  # block 0: amax 127, scale 1
    tiny[0, 64:66] = torch.tensor([1e-30, -3e-31])                 # block 2
    denormal[0, 32:35] = torch.tensor([1e-40, -3e-41, 1e-44])      # block 1
    for x in (ties, tiny, denormal):
        y = ops.mixed_gemv(x.to(device), *layer_args, x_int8=True).cpu()
        torch.testing.assert_close(y, reference.round_int8_blocks(x), rtol=1e-6, atol=0)
    rounded_ties, rounded_tiny = reference.round_int8_blocks(ties), reference.round_int8_blocks(tiny)
    assert rounded_ties[0, :6].tolist() == [127.0, 0.0, 2.0, 2.0, -2.0, 3.0]
    assert bool((rounded_ties[0, 6:] == 0).all()) and bool((rounded_tiny[0, :64] == 0).all())
    assert rounded_tiny[0, 65] / rounded_tiny[0, 64] == pytest.approx(-0.3, abs=0.01)
    # The lift changes nothing where 127 / amax is finite without it (amax 1e-30 here).
    amax = torch.tensor(1e-30)
    unlifted = torch.round(tiny[0, 64:66] * (torch.tensor(127.0) / amax)) * (amax / 127.0)
    assert torch.equal(rounded_tiny[0, 64:66], unlifted)
    rounded_denormal = reference.round_int8_blocks(denormal)[0, 32:35]
    d = torch.tensor(1e-40) / 127.0
    assert torch.equal(rounded_denormal, torch.tensor([127.0, -38.0, 0.0]) * d)


@pytest.mark.parametrize("bits", BITS)
def test_close_to_exact(bits):
    """The rounding error against the exact op stays at int8 precision: about
    0.4 % of |x| |W| (documented in docs/usage.md)."""
    layer = make_layer(64, 4096, bits, seed=bits)
    x = random_x(4, 4096, torch.float32)
    err = (ops.mixed_gemv(x, *layer.on("cpu"), x_int8=True) - ops.mixed_gemv(x, *layer.on("cpu"))).abs()
    _, scale = exact(x, layer.dense())
    assert float((err / scale).max()) < 4e-3


@pytest.mark.parametrize("bits", [2, 3])
def test_opcheck(device, bits):
    N, K, group_size = (24, 96, 32) if bits == 2 else (24, 100, -1)
    args = make_layer(N, K, bits, group_size).on(device)
    torch.library.opcheck(torch.ops.tacq.mixed_gemv.default, (random_x(3, K, torch.float32).to(device), *args),
                          {"x_int8": True})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x(device, cpu_isa, bad):
    layer = make_layer(4, 64, 2, counts=[0] * 4)
    x = torch.ones(2, 64)
    x[1, 40] = bad
    with pytest.raises(ValueError, match="x contains NaN or infinity"):
        gemv_int8(x, layer, device)


@pytest.mark.parametrize("kind, match", [("late_out_of_range", r"col_idx\[20\] = 64 .* out of range"),
                                         ("unsorted_across_vector", "strictly increasing"),
                                         ("duplicate", "strictly increasing")])
def test_bad_csr(cpu_isa, kind, match):
    packed, scale, zero, *_ = make_layer(4, 64, 2, counts=[0] * 4)[:3]
    with pytest.raises(RuntimeError, match=match):
        ops.mixed_gemv(torch.ones(1, 64), packed, scale, zero, 2, -1, *_bad_csr(kind), x_int8=True)

"""tacq.dequantize against the pure-torch reference (docs/format.md), bit for
bit, on the CPU (every ISA path) and on CUDA (where the CPU op is checked to
give the same bits too)."""

import functools

import pytest
import torch

from tacq_ext import ops, reference


def quantized(N, K, bits, group_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (N, K), generator=g, dtype=torch.int64).to(torch.uint8)
    G = reference.num_groups(K, group_size)[0]
    scale = torch.rand(N, G, generator=g) + 0.01
    zero = torch.randint(0, 2**bits, (N, G), generator=g).float()
    return ops.pack(codes, bits), scale, zero


@functools.lru_cache(maxsize=None)
def reference_case(N, K, bits, group_size, scale_dtype):
    """(packed, scale, zero, reference.dequantize in fp32), computed once for
    all ISA paths and devices (the reference unpacks bit by bit: slow). The
    reference computes in fp32 and casts, so its fp16 / bf16 output is this
    result cast."""
    packed, scale, zero = quantized(N, K, bits, group_size, seed=N + K)
    scale, zero = scale.to(scale_dtype), zero.to(scale_dtype)
    return packed, scale, zero, reference.dequantize(packed, scale, zero, bits, group_size, K)


# K = 31, 33 and 100: rows of fp16 / bf16 output not a multiple of 16 bytes
# (CUDA: the element-wise store path); N = 17 with K = 4096: several CUDA blocks.
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (3, 31, -1), (2, 33, 33), (4, 64, 32), (5, 100, -1),
                                            (5, 192, 64), (3, 256, 128), (17, 4096, 128)])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16], ids=str)
def test_matches_reference(device, cpu_isa, bits, N, K, group_size, scale_dtype):
    """Every output dtype (default fp32, fp16, bf16)."""
    packed, scale, zero, expected_fp32 = reference_case(N, K, bits, group_size, scale_dtype)
    for out_dtype in (None, torch.float16, torch.bfloat16):
        ours = ops.dequantize(packed.to(device), scale.to(device), zero.to(device), bits, group_size, K, out_dtype)
        expected = expected_fp32.to(out_dtype or torch.float32)
        assert ours.dtype == (out_dtype or torch.float32) and ours.shape == (N, K) and ours.device.type == device
        assert torch.equal(ours.cpu(), expected)
        if device != "cpu":
            assert torch.equal(ops.dequantize(packed, scale, zero, bits, group_size, K, out_dtype), expected)


def test_round_trip_with_quantize():
    """dequantize(pack(quantize(w))) is within half a step of every weight that
    the clipping search did not clip."""
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(3))
    codes, scale, zero = ops.quantize(w, 4, 32)
    deq = ops.dequantize(ops.pack(codes, 4), scale, zero, 4, 32, 128)
    step = scale.repeat_interleave(32, dim=1)
    unclipped = (codes > 0) & (codes < 15)
    assert torch.all((deq - w).abs()[unclipped] <= step[unclipped] / 2 + 1e-6)


def test_bf16_output_rounds_like_torch_at_the_edges(cpu_isa):
    """bf16 output is the fp32 value rounded once, to nearest even, bit for bit
    as torch rounds it: ties both ways and negative, subnormals, the largest
    fp32 rounding up to infinity, infinities; NaN stays NaN. K = 47 leaves a
    partial vector at the end of every row."""
    K = 47
    codes = torch.arange(K, dtype=torch.uint8).remainder(4).repeat(6, 1)
    scale = torch.tensor([[1 + 2**-8], [1 + 3 * 2**-8], [1e-39], [3.4028235e38], [float("inf")], [float("nan")]])
    zero = torch.tensor([[0.0], [0.0], [0.0], [0.0], [0.0], [4.0]])
    zero[0] = 4.0  # row 0: (code - 4) * scale, negative ties
    packed = ops.pack(codes, 2)
    ours = ops.dequantize(packed, scale, zero, 2, -1, K, torch.bfloat16)
    expected = reference.dequantize(packed, scale, zero, 2, -1, K).to(torch.bfloat16)
    nan = expected.isnan()
    assert torch.equal(ours.isnan(), nan) and nan.any() and expected.isinf().any()
    assert torch.equal(ours.view(torch.int16)[~nan], expected.view(torch.int16)[~nan])
    # -(1 + 2^-8) and 1 + 3 * 2^-8 are ties: to the even neighbours -1 and 1 + 2^-6
    assert ours[3, 1].isinf() and ours[0, 3] == -1 and ours[1, 1] == 1 + 2**-6


@pytest.mark.parametrize("bits", [2, 3])
def test_opcheck(device, bits):
    """fp32 scales with the default and bf16 output; on CUDA fp16 scales too."""
    packed, scale, zero = quantized(4, 70, bits, -1)
    for scale_dtype in [torch.float32] + ([torch.float16] if device != "cpu" else []):
        args = (packed.to(device), scale.to(device, scale_dtype), zero.to(device, scale_dtype), bits, -1, 70)
        torch.library.opcheck(torch.ops.tacq.dequantize.default, args)
        torch.library.opcheck(torch.ops.tacq.dequantize.default, args + (torch.bfloat16,))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p, s, z: ops.dequantize(p, s, z, 1, -1, 64), "bits must be 2, 3 or 4"),
        (lambda p, s, z: ops.dequantize(p, s, z, 2, 48, 64), "group_size must be"),
        (lambda p, s, z: ops.dequantize(p, s, z, 2, -1, 65), r"packed.shape\[1\]"),
        (lambda p, s, z: ops.dequantize(p.float(), s, z, 2, -1, 64), "packed must have dtype torch.int32"),
        (lambda p, s, z: ops.dequantize(p, s[:3], z, 2, -1, 64), r"scale.shape\[0\] must be N"),
        (lambda p, s, z: ops.dequantize(p, s, z.half(), 2, -1, 64), "scale and zero must have the same dtype"),
        (lambda p, s, z: ops.dequantize(p, s.double(), z.double(), 2, -1, 64), "scale must have dtype"),
        (lambda p, s, z: ops.dequantize(torch.cat([p, p], 1)[:, ::2], s, z, 2, -1, 64), "packed must be contiguous"),
        (lambda p, s, z: ops.dequantize(p, s, z, 2, -1, 64, torch.int8), "dtype must be"),
    ],
)
def test_bad_input(make, match):
    packed, scale, zero = quantized(4, 64, 2, -1)
    with pytest.raises(RuntimeError, match=match):
        make(packed, scale, zero)

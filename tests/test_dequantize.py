"""tacq.dequantize against the pure-torch reference (docs/format.md)."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import has_kernel


def quantized(N, K, bits, group_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (N, K), generator=g, dtype=torch.int64).to(torch.uint8)
    G = reference.num_groups(K, group_size)[0]
    scale = torch.rand(N, G, generator=g) + 0.01
    zero = torch.randint(0, 2**bits, (N, G), generator=g).float()
    return ops.pack(codes, bits), scale, zero


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (3, 31, -1), (2, 33, 33), (4, 64, 32),
                                            (5, 100, -1), (3, 256, 128), (2, 4096, 128)])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_matches_reference(cpu_isa, bits, N, K, group_size, scale_dtype):
    packed, scale, zero = quantized(N, K, bits, group_size, seed=N + K)
    scale, zero = scale.to(scale_dtype), zero.to(scale_dtype)
    ours = ops.dequantize(packed, scale, zero, bits, group_size, K)
    assert ours.dtype == torch.float32 and ours.shape == (N, K)
    torch.testing.assert_close(ours, reference.dequantize(packed, scale, zero, bits, group_size, K), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_output_dtype(device, dtype):
    if not has_kernel("dequantize", device):
        pytest.skip(f"no dequantize kernel for {device}")
    packed, scale, zero = quantized(4, 96, 3, 32)
    ours = ops.dequantize(packed.to(device), scale.to(device), zero.to(device), 3, 32, 96, dtype)
    assert ours.dtype == dtype and ours.device.type == device
    expected = reference.dequantize(packed, scale, zero, 3, 32, 96, dtype)
    torch.testing.assert_close(ours.cpu(), expected, rtol=0, atol=0)


def test_round_trip_with_quantize():
    """dequantize(pack(quantize(w))) is within half a step of every weight that
    the clipping search did not clip."""
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(3))
    codes, scale, zero = ops.quantize(w, 4, 32)
    deq = ops.dequantize(ops.pack(codes, 4), scale, zero, 4, 32, 128)
    step = scale.repeat_interleave(32, dim=1)
    unclipped = (codes > 0) & (codes < 15)
    assert torch.all((deq - w).abs()[unclipped] <= step[unclipped] / 2 + 1e-6)


def test_opcheck(device):
    if not has_kernel("dequantize", device):
        pytest.skip(f"no dequantize kernel for {device}")
    packed, scale, zero = quantized(4, 70, 3, -1)
    args = (packed.to(device), scale.to(device), zero.to(device), 3, -1, 70)
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

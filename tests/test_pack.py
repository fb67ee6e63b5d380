"""tacq.pack / tacq.unpack against the pure-torch reference (docs/format.md), on
the CPU and on CUDA (where the CPU op gives the same words: both equal the
reference's)."""

import pytest
import torch

from tacq_ext import ops, reference

SHAPES = [(1, 1), (1, 31), (3, 31), (3, 32), (2, 33), (5, 64), (5, 96), (4, 100), (7, 257), (33, 4096)]


def random_codes(N, K, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**bits, (N, K), generator=g, dtype=torch.int64).to(torch.uint8)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K", SHAPES)
def test_pack_matches_reference(device, bits, N, K):
    codes = random_codes(N, K, bits).to(device)
    packed = ops.pack(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (N, (K + 31) // 32 * bits)
    torch.testing.assert_close(packed.cpu(), reference.pack(codes.cpu(), bits), rtol=0, atol=0)
    torch.testing.assert_close(ops.unpack(packed, bits, K).cpu(), codes.cpu(), rtol=0, atol=0)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pack_extreme_codes(device, bits):
    """All-max codes set every bit of the stream; padding bits stay zero."""
    K = 45
    codes = torch.full((3, K), 2**bits - 1, dtype=torch.uint8, device=device)
    packed = ops.pack(codes, bits).cpu()
    torch.testing.assert_close(packed, reference.pack(codes.cpu(), bits), rtol=0, atol=0)
    used_bits = K * bits
    words = packed.to(torch.int64) & 0xFFFFFFFF
    total = sum(bin(int(w)).count("1") for w in words[0])
    assert total == used_bits


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_unpack_matches_reference_on_arbitrary_words(device, bits):
    """Any int32 bit pattern unpacks like the reference (sign bit included)."""
    g = torch.Generator().manual_seed(1)
    K = 70
    packed = torch.randint(-(2**31), 2**31 - 1, (4, (K + 31) // 32 * bits), generator=g, dtype=torch.int64)
    packed = packed.to(torch.int32)
    ours = ops.unpack(packed.to(device), bits, K).cpu()
    torch.testing.assert_close(ours, reference.unpack(packed, bits, K), rtol=0, atol=0)


def test_empty_rows(device):
    codes = torch.zeros(0, 40, dtype=torch.uint8, device=device)
    assert ops.pack(codes, 3).shape == (0, 6)
    assert ops.unpack(torch.zeros(0, 6, dtype=torch.int32, device=device), 3, 40).shape == (0, 40)


def test_pack_accepts_non_contiguous():
    codes = random_codes(8, 64, 2)
    view = codes.t().contiguous().t()  # same values, column-major strides
    assert not view.is_contiguous()
    assert torch.equal(ops.pack(view, 2), ops.pack(codes, 2))


@pytest.mark.parametrize("bits", [2, 3])
def test_opcheck(device, bits):
    codes = random_codes(4, 70, bits).to(device)
    torch.library.opcheck(torch.ops.tacq.pack.default, (codes, bits))
    packed = ops.pack(codes, bits)
    torch.library.opcheck(torch.ops.tacq.unpack.default, (packed, bits, 70))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ops.pack(torch.zeros(2, 8, dtype=torch.uint8), 1), "bits must be 2, 3 or 4"),
        (lambda: ops.pack(torch.zeros(2, 8, dtype=torch.uint8), 5), "bits must be 2, 3 or 4"),
        (lambda: ops.pack(torch.zeros(2, 8, dtype=torch.int32), 2), "codes must have dtype"),
        (lambda: ops.pack(torch.zeros(8, dtype=torch.uint8), 2), "codes must be 2-D"),
        (lambda: ops.pack(torch.zeros(2, 0, dtype=torch.uint8), 2), "codes must have K >= 1"),
        (lambda: ops.pack(torch.full((2, 8), 4, dtype=torch.uint8), 2), "codes must be < 2\\^bits"),
        (lambda: ops.unpack(torch.zeros(2, 3, dtype=torch.int32), 2, 64), r"packed.shape\[1\] must be"),
        (lambda: ops.unpack(torch.zeros(2, 4, dtype=torch.int64), 2, 64), "packed must have dtype"),
        (lambda: ops.unpack(torch.zeros(4, 2, dtype=torch.int32).t(), 2, 32), "packed must be contiguous"),
        (lambda: ops.unpack(torch.zeros(2, 2, dtype=torch.int32), 2, 0), "K must be >= 1"),
        (lambda: ops.unpack(torch.zeros(2, 2, dtype=torch.int32), 4, 32), r"packed.shape\[1\] must be ceil\(K/32\)\*bits = 4"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises(RuntimeError, match=match):
        make()


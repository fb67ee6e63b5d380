"""pack then unpack gives the codes back, for codes, shapes and bit widths
drawn by hypothesis (the CPU ops; test_pack.py compares both devices with the
reference). A file of its own, skipped where hypothesis is not installed, so
that test_pack.py's CUDA cases run on the lent GPU image, which lacks it."""

import pytest
import torch

from tacq_ext import ops

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    bits=st.sampled_from([2, 3, 4]),
    N=st.integers(1, 6),
    K=st.integers(1, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_unpack_round_trip(bits, N, K, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (N, K), generator=g, dtype=torch.uint8)
    assert torch.equal(ops.unpack(ops.pack(codes, bits), bits, K), codes)

"""tacq.gather_columns (a CPU kernel: out[m, j] = y[m, index[j]]) against the
element-by-element reference, with opcheck and the argument errors."""

import pytest
import torch

from tacq_ext import ops, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,n_out", [(1, 1, 1), (1, 8192, 8192), (3, 17, 5), (16, 96, 96), (513, 64, 64),
                                       (2, 40, 100), (0, 8, 8), (4, 8, 0)])
def test_gather_columns_matches_reference(gen, dtype, M, N, n_out):
    y = torch.randn(M, N, generator=gen).to(dtype)
    index = torch.randint(0, N, (n_out,), generator=gen)  # repeats and gaps allowed
    got = ops.gather_columns(y, index)
    assert got.dtype == dtype and got.shape == (M, n_out)
    assert torch.equal(got, reference.gather_columns(y, index))


def test_gather_columns_copies_nan_and_inf_bits_unchanged():
    y = torch.tensor([[float("nan"), float("inf"), -0.0, 1.0]], dtype=torch.bfloat16)
    got = ops.gather_columns(y, torch.tensor([3, 2, 1, 0]))
    assert torch.equal(got.view(torch.int16), y.view(torch.int16)[:, [3, 2, 1, 0]])


def test_gather_columns_opcheck(gen):
    y = torch.randn(5, 33, generator=gen)
    torch.library.opcheck(torch.ops.tacq.gather_columns.default, (y, torch.randperm(33, generator=gen)))
    torch.library.opcheck(torch.ops.tacq.gather_columns.default, (y.bfloat16(), torch.tensor([0, 0, 32])))


@pytest.mark.parametrize("make, message", [
    (lambda: (torch.randn(8), torch.arange(8)), "y must be 2-D"),
    (lambda: (torch.zeros(2, 8, dtype=torch.int32), torch.arange(8)), "y must have dtype"),
    (lambda: (torch.randn(8, 2).T, torch.arange(8)), "y must be contiguous"),
    (lambda: (torch.randn(2, 8), torch.arange(8).int()), "index must have dtype torch.int64"),
    (lambda: (torch.randn(2, 8), torch.arange(8)[None]), "index must be 1-D"),
    (lambda: (torch.randn(2, 8), torch.arange(16)[::2]), "index must be contiguous"),
    (lambda: (torch.randn(2, 8), torch.tensor([0, 8, 1])), "index\\[1\\] = 8 is outside \\[0, 8\\)"),
    (lambda: (torch.randn(2, 8), torch.tensor([0, 1, -1])), "index\\[2\\] = -1 is outside \\[0, 8\\)"),
])
def test_gather_columns_names_the_bad_argument(make, message):
    with pytest.raises(RuntimeError, match=f"tacq.gather_columns: .*{message}|{message}"):
        ops.gather_columns(*make())

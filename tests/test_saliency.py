"""tacq.saliency_accumulate against the per-sample fp64 reference."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import ISA_PATHS, has_kernel

def check(acc0, grad_out, act, device="cpu"):
    acc = acc0.clone().to(device)
    ops.saliency_accumulate(acc, grad_out.to(device), act.to(device))
    expected = acc0.clone()
    reference.saliency_accumulate(expected, grad_out.float(), act.float())
    # fp32 rounding of a T-term dot product of unit-scale terms grows like sqrt(T).
    tokens = grad_out.shape[-2]
    atol = 1e-5 * max(1.0, (tokens / 16) ** 0.5)
    torch.testing.assert_close(acc.cpu(), expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B,T,N,K", [(1, 1, 1, 1), (3, 5, 7, 9), (2, 33, 64, 100), (4, 1, 17, 31),
                                     (1, 64, 128, 96)])
def test_matches_reference(device, cpu_isa, dtype, B, T, N, K):
    if device != "cpu" and cpu_isa != ISA_PATHS[-1]:
        pytest.skip("the ISA path only matters on the CPU")
    if not has_kernel("saliency_accumulate", device):
        pytest.skip(f"no saliency_accumulate kernel for {device}")
    g = torch.Generator().manual_seed(B * 100 + N)
    grad_out = torch.randn(B, T, N, generator=g).to(dtype)
    act = torch.randn(B, T, K, generator=g).to(dtype)
    check(torch.rand(N, K, generator=g), grad_out, act, device)


@pytest.mark.parametrize("B,T,N,K", [
    (2, 37, 253, 577),   # one row past a 252-row block, a column strip past 512, both partial
    (1, 700, 13, 65),    # long samples shrink the column blocks; 13 rows = two 6-row tiles + 1
    (3, 2, 300, 1),      # a single column: every tile masked down to one lane
    (1, 3, 1, 1030),     # a single row
    (2, 3, 50, 2100),    # three column blocks of unequal width; bf16: a last step of one token
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_blocking_edges(cpu_isa, dtype, B, T, N, K):
    """Shapes around the AVX-512 kernels' 6 x 64 tiles, their token pairs (bf16) and
    their cache blocks, on every ISA path."""
    g = torch.Generator().manual_seed(T * 7 + K)
    grad_out, act = torch.randn(B, T, N, generator=g).to(dtype), torch.randn(B, T, K, generator=g).to(dtype)
    check(torch.rand(N, K, generator=g), grad_out, act)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_short_samples_grouped(cpu_isa, dtype):
    """Samples under 128 steps are swept over acc in groups (T=40: groups of 3 for
    fp32, 6 for bf16 token pairs); 7 samples leave a partial last group."""
    g = torch.Generator().manual_seed(9)
    grad_out = torch.randn(7, 40, 20, generator=g).to(dtype)
    act = torch.randn(7, 40, 130, generator=g).to(dtype)
    check(torch.rand(20, 130, generator=g), grad_out, act)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_one_token_samples(cpu_isa, dtype):
    """T = 1 takes the |g||a| shortcut (one product over all samples); signs vary per sample."""
    g = torch.Generator().manual_seed(8)
    grad_out = torch.randn(300, 1, 40, generator=g).to(dtype)
    act = torch.randn(300, 1, 70, generator=g).to(dtype)
    check(torch.rand(40, 70, generator=g), grad_out, act)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1e-15, 1e15])
def test_huge_and_tiny_magnitudes(cpu_isa, dtype, scale):
    """Inputs far from unit scale (their products still normal fp32 numbers);
    fp16 cannot hold them, so its inputs are 1e-2 or 1e2 and acc scales with them."""
    if dtype == torch.float16:
        scale = 1e-2 if scale < 1 else 1e2
    g = torch.Generator().manual_seed(7)
    grad_out = (torch.randn(2, 20, 30, generator=g) * scale).to(dtype)
    act = (torch.randn(2, 20, 70, generator=g) * scale).to(dtype)
    acc = torch.zeros(30, 70)
    ops.saliency_accumulate(acc, grad_out, act)
    expected = torch.zeros(30, 70)
    reference.saliency_accumulate(expected, grad_out.float(), act.float())
    torch.testing.assert_close(acc / scale**2, expected / scale**2, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("threads", [1, 3])
def test_thread_count_does_not_change_the_result(dtype, threads):
    """Blocks and packed tokens are split per thread count; each acc element is
    still summed in one fixed order."""
    g = torch.Generator().manual_seed(6)
    grad_out = torch.randn(2, 40, 100, generator=g).to(dtype)
    act = torch.randn(2, 40, 70, generator=g).to(dtype)
    acc0 = torch.rand(100, 70, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        acc = acc0.clone()
        ops.saliency_accumulate(acc, grad_out, act)
    finally:
        torch.set_num_threads(before)
    expected = acc0.clone()
    ops.saliency_accumulate(expected, grad_out, act)
    torch.testing.assert_close(acc, expected, rtol=0, atol=0)


def test_two_dimensional_inputs_are_one_sample():
    g = torch.Generator().manual_seed(1)
    grad_out, act = torch.randn(6, 10, generator=g), torch.randn(6, 12, generator=g)
    acc2, acc3 = torch.zeros(10, 12), torch.zeros(10, 12)
    ops.saliency_accumulate(acc2, grad_out, act)
    ops.saliency_accumulate(acc3, grad_out[None], act[None])
    torch.testing.assert_close(acc2, acc3, rtol=0, atol=0)
    torch.testing.assert_close(acc2, (grad_out.T @ act).abs(), rtol=1e-5, atol=1e-5)


def test_absolute_value_is_taken_per_sample():
    """Two samples with opposite gradients cancel in |sum| but not in sum |.|."""
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(4, 8, generator=g)
    act = torch.randn(4, 5, generator=g)
    acc = torch.zeros(8, 5)
    ops.saliency_accumulate(acc, torch.stack([grad, -grad]), torch.stack([act, act]))
    torch.testing.assert_close(acc, 2 * (grad.T @ act).abs(), rtol=1e-5, atol=1e-5)


def test_padded_positions_add_nothing():
    g = torch.Generator().manual_seed(3)
    grad, act = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 5, generator=g)
    grad[0, 4:] = 0  # sample 0 is 4 tokens long, padded to 6
    act_noise = act.clone()
    act_noise[0, 4:] = 1e3  # whatever sits in the padded activations
    a, b = torch.zeros(8, 5), torch.zeros(8, 5)
    ops.saliency_accumulate(a, grad, act)
    ops.saliency_accumulate(b, grad, act_noise)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_spans_several_row_tiles():
    """N*K above one 16 MiB tile: the row tiling must cover every row once."""
    g = torch.Generator().manual_seed(4)
    N, K = 1100, 4096
    grad_out, act = torch.randn(2, 3, N, generator=g), torch.randn(2, 3, K, generator=g)
    check(torch.zeros(N, K), grad_out, act)


def test_empty_token_dimension_leaves_acc_unchanged():
    acc = torch.rand(4, 6)
    before = acc.clone()
    ops.saliency_accumulate(acc, torch.zeros(2, 0, 4), torch.zeros(2, 0, 6))
    assert torch.equal(acc, before)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(5)
    grad_out = torch.randn(2, 8, 5, generator=g).transpose(1, 2)  # [2, 5, 8] view
    act = torch.randn(2, 7, 5, generator=g).transpose(1, 2)       # [2, 5, 7] view
    check(torch.zeros(8, 7), grad_out, act)


def test_opcheck(device):
    if not has_kernel("saliency_accumulate", device):
        pytest.skip(f"no saliency_accumulate kernel for {device}")
    acc = torch.zeros(6, 10, device=device)
    args = (acc, torch.randn(2, 3, 6, device=device), torch.randn(2, 3, 10, device=device))
    torch.library.opcheck(torch.ops.tacq.saliency_accumulate.default, args)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8).t(), torch.zeros(3, 8), torch.zeros(3, 4)), "acc must be contiguous"),
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8), torch.zeros(3, 4, 1, 1), torch.zeros(3, 8, 1, 1)), "grad_out must be 2-D"),
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8), torch.zeros(3, 4), torch.zeros(1, 3, 8)), "act must have the rank of grad_out"),
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8), torch.zeros(3, 4, dtype=torch.int32), torch.zeros(3, 8, dtype=torch.int32)), "grad_out must have dtype"),
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8), torch.zeros(2, 3, 4), torch.zeros(3, 3, 8)), "agree on the batch and token"),
        (lambda: ops.saliency_accumulate(torch.zeros(4, 8), torch.zeros(3, 4), torch.zeros(3, 9)), r"act.shape\[1\] must be K"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises(RuntimeError, match=match):
        make()

"""tacq.saliency_accumulate against the per-sample reference, on the CPU (every
ISA path) and on CUDA (where the CPU op is checked on the same inputs too):
B = 1, T = 1, N / K / T that are not multiples of the CPU's 6 x 64 tiles or
the CUDA kernel's 128 x 128 tiles and 32 / 16-token stages, unaligned and
strided inputs, every dtype, padding, empty inputs, opcheck, bad input."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import CUDA, torch_threads


def check(acc0, grad_out, act, device="cpu", via=None):
    """acc0 + sum_b |grad_out[b]^T act[b]| from the op on `device` against the
    reference (on CUDA the CPU op's result on the same inputs too). `via` moves
    the inputs to the device (default: .to(device))."""
    via = via or (lambda t: t.to(device))
    acc = acc0.clone().to(device)
    ops.saliency_accumulate(acc, via(grad_out), via(act))
    expected = acc0.clone()
    reference.saliency_accumulate(expected, grad_out.float(), act.float())
    tokens = grad_out.shape[-2]
    if device == "cpu":
        # fp32 rounding of a T-term dot product of unit-scale terms grows like sqrt(T).
        atol = 1e-5 * max(1.0, (tokens / 16) ** 0.5)
    else:
        # fp32 accumulation over T exact products: relative error ~ T * 2^-24.
        atol = 1e-5 * max(tokens, 16) * expected.abs().max().item()
    torch.testing.assert_close(acc.cpu(), expected, rtol=1e-5, atol=atol)
    if device != "cpu":
        cpu = acc0.clone()
        ops.saliency_accumulate(cpu, grad_out, act)
        torch.testing.assert_close(acc.cpu(), cpu, rtol=1e-5, atol=atol)


SHAPES = [  # (B, T, N, K)
    (1, 1, 1, 1),
    (3, 5, 7, 9),
    (4, 1, 17, 31),
    (2, 33, 64, 100),
    (1, 64, 128, 96),
    (1, 1, 128, 128),
    (1, 37, 130, 70),       # CUDA: N, K past one tile; T not a stage multiple
    (2, 64, 128, 256),      # CUDA: exact tiles
    (3, 33, 129, 257),      # CUDA: odd N, K: element-wise loads
    (4, 100, 264, 136),     # CUDA: N, K multiples of 8 but not of the tile
    (2, 17, 8, 1000),       # CUDA: single tile row, many tile columns
    (1, 300, 1100, 24),     # CUDA: > 8 tile rows: second rasterization group
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,N,K", SHAPES)
def test_matches_reference(device, cpu_isa, dtype, B, T, N, K):
    g = torch.Generator().manual_seed(B * 100 + N)
    grad_out = torch.randn(B, T, N, generator=g).to(dtype)
    act = torch.randn(B, T, K, generator=g).to(dtype)
    check(torch.rand(N, K, generator=g) * 3, grad_out, act, device)


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
    with torch_threads(threads):
        acc = acc0.clone()
        ops.saliency_accumulate(acc, grad_out, act)
    expected = acc0.clone()
    ops.saliency_accumulate(expected, grad_out, act)
    torch.testing.assert_close(acc, expected, rtol=0, atol=0)


DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_two_dimensional_inputs_are_one_sample(device, dtype):
    g = torch.Generator().manual_seed(1)
    grad_out, act = torch.randn(45, 140, generator=g).to(dtype), torch.randn(45, 90, generator=g).to(dtype)
    acc0 = torch.rand(140, 90, generator=g)
    check(acc0, grad_out, act, device)
    acc2, acc3 = acc0.clone().to(device), acc0.clone().to(device)
    ops.saliency_accumulate(acc2, grad_out.to(device), act.to(device))
    ops.saliency_accumulate(acc3, grad_out[None].to(device), act[None].to(device))
    torch.testing.assert_close(acc2, acc3, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_absolute_value_is_taken_per_sample(device, dtype):
    """Sample 1 is sample 0 with the gradient negated: they cancel in |sum| but
    not in sum |.| (a sum-then-abs kernel gives 0)."""
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(40, 136, generator=g).to(dtype)
    act = torch.randn(40, 136, generator=g).to(dtype)
    acc = torch.zeros(136, 136, device=device)
    ops.saliency_accumulate(acc, torch.stack([grad, -grad]).to(device), torch.stack([act, act]).to(device))
    one = (grad.double().T @ act.double()).abs()
    torch.testing.assert_close(acc.cpu().double(), 2 * one, rtol=1e-4, atol=1e-4 * one.max().item())


def test_padded_positions_add_nothing(device):
    """Zero gradients past each sample's length: the result is the reference's
    over the unpadded tokens, whatever sits in the padded activations."""
    g = torch.Generator().manual_seed(4)
    B, T, N, K = 3, 50, 130, 70
    grad = torch.randn(B, T, N, generator=g).to(torch.bfloat16)
    act = torch.randn(B, T, K, generator=g).to(torch.bfloat16)
    lengths = (50, 20, 45)
    for b, length in enumerate(lengths):
        grad[b, length:] = 0
    acc0 = torch.rand(N, K, generator=g) * 3
    expected = acc0.clone()
    for b, length in enumerate(lengths):
        reference.saliency_accumulate(expected, grad[b, :length].float(), act[b, :length].float())
    a = acc0.clone().to(device)
    ops.saliency_accumulate(a, grad.to(device), act.to(device))
    torch.testing.assert_close(a.cpu(), expected, rtol=1e-5, atol=1e-5 * T * expected.abs().max().item())
    act_noise = act.clone()
    act_noise[1, 20:] = 1e3
    b = acc0.clone().to(device)
    ops.saliency_accumulate(b, grad.to(device), act_noise.to(device))
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_spans_several_row_tiles():
    """N*K above one 16 MiB tile: the row tiling must cover every row once."""
    g = torch.Generator().manual_seed(4)
    N, K = 1100, 4096
    grad_out, act = torch.randn(2, 3, N, generator=g), torch.randn(2, 3, K, generator=g)
    check(torch.zeros(N, K), grad_out, act)


def test_empty_inputs_leave_acc_unchanged(device):
    """No tokens (3-D and 2-D inputs) or no samples."""
    acc = torch.rand(40, 50, device=device)
    before = acc.clone()
    ops.saliency_accumulate(acc, torch.zeros(2, 0, 40, device=device), torch.zeros(2, 0, 50, device=device))
    ops.saliency_accumulate(acc, torch.zeros(0, 7, 40, device=device), torch.zeros(0, 7, 50, device=device))
    ops.saliency_accumulate(acc, torch.zeros(0, 40, device=device), torch.zeros(0, 50, device=device))
    assert torch.equal(acc, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_unaligned_and_strided_inputs(device, dtype):
    """A base pointer off the 16-byte grid (CUDA: the element-wise path) and
    transposed views give the reference's result."""
    g = torch.Generator().manual_seed(3)
    B, T, N, K = 2, 40, 136, 144
    grad, act = torch.randn(B, T, N, generator=g).to(dtype), torch.randn(B, T, K, generator=g).to(dtype)
    acc0 = torch.rand(N, K, generator=g) * 3

    def shifted(t):
        out = torch.empty(t.numel() + 1, dtype=t.dtype, device=device)[1:].view(t.shape)
        out.copy_(t)
        assert out.data_ptr() % 16 != 0
        return out

    def transposed(t):  # same values, the token dimension innermost
        return t.transpose(1, 2).contiguous().to(device).transpose(1, 2)

    check(acc0, grad, act, device, via=shifted)
    check(acc0, grad, act, device, via=transposed)


@pytest.mark.parametrize("device", [CUDA], indirect=True)
def test_cuda_runs_on_the_current_stream(device):
    g = torch.Generator().manual_seed(5)
    acc0, grad, act = torch.rand(256, 256, generator=g), torch.randn(2, 64, 256, generator=g).half(), \
        torch.randn(2, 64, 256, generator=g).half()
    expected = acc0.clone()
    reference.saliency_accumulate(expected, grad.float(), act.float())
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got, a, b = acc0.clone().to(device), grad.to(device), act.to(device)
        ops.saliency_accumulate(got, a, b)
    stream.synchronize()
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5 * 64 * expected.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(device, dtype):
    g = torch.Generator().manual_seed(6)
    B, T, N, K = (2, 3, 6, 10) if device == "cpu" else (2, 19, 130, 40)
    args = (torch.zeros(N, K), torch.randn(B, T, N, generator=g).to(dtype), torch.randn(B, T, K, generator=g).to(dtype))
    torch.library.opcheck(torch.ops.tacq.saliency_accumulate.default, tuple(a.to(device) for a in args))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d).t(), torch.zeros(3, 8, device=d),
                                           torch.zeros(3, 4, device=d)), "acc must be contiguous"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, dtype=torch.float64, device=d), torch.zeros(3, 4, device=d),
                                           torch.zeros(3, 8, device=d)), "acc must have dtype"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(3, 4, 1, 1, device=d),
                                           torch.zeros(3, 8, 1, 1, device=d)), "grad_out must be 2-D"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(3, 4, device=d),
                                           torch.zeros(1, 3, 8, device=d)), "act must have the rank of grad_out"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(3, 4, dtype=torch.int32, device=d),
                                           torch.zeros(3, 8, dtype=torch.int32, device=d)), "grad_out must have dtype"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(3, 4, device=d),
                                           torch.zeros(3, 8, dtype=torch.float16, device=d)),
         "act and grad_out must have the same dtype"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(2, 3, 4, device=d),
                                           torch.zeros(3, 3, 8, device=d)), "agree on the batch and token"),
        (lambda d: ops.saliency_accumulate(torch.zeros(4, 8, device=d), torch.zeros(3, 4, device=d),
                                           torch.zeros(3, 9, device=d)), r"act.shape\[1\] must be K"),
    ],
)
def test_bad_input(device, make, match):
    with pytest.raises(RuntimeError, match=f"tacq.saliency_accumulate: .*{match}"):
        make(device)

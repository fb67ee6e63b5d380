"""CUDA saliency_accumulate and quantize against the CPU kernels and reference.py
on the same inputs: B = 1, T = 1, N / K / T that are not multiples of the
128 x 128 tile or the 32 / 16-token stage, unaligned rows (element-wise load
path), all dtypes, keep_mask edge cases, long rows (unstaged quantize path),
opcheck, non-default streams and bad input.

quantize must give the CPU kernel's codes, scale and zero exactly; the only
allowed difference is at a numerical tie of the clipping-search error, where
the two kernels' error sums (different pow and summation order) may rank two
factors differently. `assert_same_quantization` checks that any differing group
is such a tie under reference.py's own error formula.
"""

import pytest
import torch
from torch.library import opcheck

from conftest import has_kernel
from tacq_ext import ops, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: the CUDA kernels cannot run here")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _cuda_kernels_built():
    for op in ("saliency_accumulate", "quantize"):
        assert has_kernel(op, "cuda"), (
            f"tacq.{op} has no CUDA kernel although a GPU is present: the extension was built "
            "without CUDA (TACQ_CUDA=ON makes that an error)")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ saliency_accumulate

SALIENCY_SHAPES = [  # (B, T, N, K)
    (1, 1, 1, 1),
    (1, 1, 128, 128),
    (1, 37, 130, 70),       # N, K past one tile; T not a stage multiple
    (2, 64, 128, 256),      # exact tiles
    (3, 33, 129, 257),      # odd N, K: element-wise loads
    (4, 100, 264, 136),     # N, K multiples of 8 but not of the tile
    (2, 17, 8, 1000),       # single tile row, many tile columns
    (1, 300, 1100, 24),     # > 8 tile rows: second rasterization group
]


def _saliency_inputs(B, T, N, K, dtype, seed=0):
    g = _gen(seed)
    grad = torch.randn(B, T, N, generator=g).to(dtype)
    act = torch.randn(B, T, K, generator=g).to(dtype)
    acc = torch.rand(N, K, generator=g) * 3  # nonzero: the op accumulates
    return acc, grad, act


def _saliency_expected(acc, grad, act):
    out = acc.clone()
    reference.saliency_accumulate(out, grad.float(), act.float())
    return out


def _assert_saliency_close(got, expected, T):
    # fp32 accumulation over T exact products: relative error ~ T * 2^-24.
    tol = 1e-5 * max(T, 16) * expected.abs().max().item()
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SALIENCY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_saliency_matches_reference_and_cpu(shape, dtype):
    B, T, N, K = shape
    acc, grad, act = _saliency_inputs(B, T, N, K, dtype)
    expected = _saliency_expected(acc, grad, act)
    got = acc.cuda()
    ops.saliency_accumulate(got, grad.cuda(), act.cuda())
    _assert_saliency_close(got, expected, T)
    cpu = acc.clone()
    ops.saliency_accumulate(cpu, grad, act)
    _assert_saliency_close(got, cpu, T)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saliency_two_dimensional_inputs(dtype):
    acc, grad, act = _saliency_inputs(1, 45, 140, 90, dtype, seed=1)
    expected = _saliency_expected(acc, grad, act)
    got = acc.cuda()
    ops.saliency_accumulate(got, grad[0].cuda(), act[0].cuda())
    _assert_saliency_close(got, expected, 45)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saliency_abs_is_per_sample(dtype):
    """Sample 1 is sample 0 with the gradient negated: a sum-then-abs kernel gives 0."""
    _, grad, act = _saliency_inputs(1, 40, 136, 136, dtype, seed=2)
    grad = torch.cat([grad, -grad]).cuda()
    act = torch.cat([act, act]).cuda()
    acc = torch.zeros(136, 136, device="cuda")
    ops.saliency_accumulate(acc, grad, act)
    one = (grad[0].double().T @ act[0].double()).abs()
    torch.testing.assert_close(acc.double(), 2 * one, rtol=1e-4, atol=1e-4 * one.max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saliency_unaligned_and_strided_inputs(dtype):
    """A base pointer off the 16-byte grid (element-wise path) and a transposed
    view (made contiguous by the glue) give the same result."""
    B, T, N, K = 2, 40, 136, 144
    acc, grad, act = _saliency_inputs(B, T, N, K, dtype, seed=3)
    expected = _saliency_expected(acc, grad, act)
    shifted = torch.empty(grad.numel() + 1, dtype=dtype, device="cuda")[1:].view(B, T, N)
    shifted.copy_(grad)
    assert shifted.data_ptr() % 16 != 0
    got = acc.cuda()
    ops.saliency_accumulate(got, shifted, act.cuda())
    _assert_saliency_close(got, expected, T)
    strided_act = act.transpose(1, 2).contiguous().cuda().transpose(1, 2)
    got = acc.cuda()
    ops.saliency_accumulate(got, grad.cuda(), strided_act)
    _assert_saliency_close(got, expected, T)


def test_saliency_zero_padding_tokens_contribute_nothing():
    B, T, N, K = 3, 50, 130, 70
    acc, grad, act = _saliency_inputs(B, T, N, K, torch.bfloat16, seed=4)
    grad[1, 20:] = 0  # sample 1 is 20 tokens long
    grad[2, 45:] = 0
    expected = acc.clone()
    for b, length in enumerate((50, 20, 45)):
        reference.saliency_accumulate(expected, grad[b, :length].float(), act[b, :length].float())
    got = acc.cuda()
    ops.saliency_accumulate(got, grad.cuda(), act.cuda())
    _assert_saliency_close(got, expected, T)


def test_saliency_runs_on_the_current_stream():
    acc, grad, act = _saliency_inputs(2, 64, 256, 256, torch.float16, seed=5)
    expected = _saliency_expected(acc, grad, act)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got, g, a = acc.cuda(), grad.cuda(), act.cuda()
        ops.saliency_accumulate(got, g, a)
    stream.synchronize()
    _assert_saliency_close(got, expected, 64)


def test_saliency_empty_batch_leaves_acc_unchanged():
    acc = torch.rand(40, 50, device="cuda")
    before = acc.clone()
    ops.saliency_accumulate(acc, torch.zeros(0, 7, 40, device="cuda"), torch.zeros(0, 7, 50, device="cuda"))
    ops.saliency_accumulate(acc, torch.zeros(0, 40, device="cuda"), torch.zeros(0, 50, device="cuda"))
    assert torch.equal(acc, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saliency_opcheck(dtype):
    acc, grad, act = _saliency_inputs(2, 19, 130, 40, dtype, seed=6)
    opcheck(torch.ops.tacq.saliency_accumulate.default, (acc.cuda(), grad.cuda(), act.cuda()))


def test_saliency_bad_input():
    acc = torch.zeros(16, 24, device="cuda")
    grad = torch.randn(2, 5, 16, device="cuda")
    act = torch.randn(2, 5, 24, device="cuda")
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: grad_out"):
        ops.saliency_accumulate(acc, grad.cpu(), act)
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: act and grad_out must have the same dtype"):
        ops.saliency_accumulate(acc, grad, act.half())
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: act"):
        ops.saliency_accumulate(acc, grad, torch.randn(2, 5, 23, device="cuda"))
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: acc"):
        ops.saliency_accumulate(acc.double(), grad, act)
    with pytest.raises(RuntimeError, match="tacq.saliency_accumulate: acc"):
        ops.saliency_accumulate(torch.zeros(24, 16, device="cuda").T, grad, act)


# ------------------------------------------------------------------ quantize


def _statistics_view(w, keep):
    """(v, span) of one fp32 group exactly as reference.py builds them."""
    free = ~keep
    if bool(free.any()):
        fill = w[free].double().mean().float().clamp(w[free].min(), w[free].max())
    else:
        fill = torch.tensor(0.0)
    v = torch.where(keep, fill, w)
    lo, hi = torch.clamp(v.min(), max=0.0), torch.clamp(v.max(), min=0.0)
    if float(hi - lo) < torch.finfo(torch.float32).tiny:
        lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
    return v, hi - lo


def _search_error(v, span, scale, zero, bits):
    scale, zero = torch.tensor(scale), torch.tensor(zero)
    q = torch.clamp(torch.round(v / scale) + zero, 0, 2**bits - 1)
    return float((((scale * (q - zero) - v) / span).abs() ** reference.ERROR_NORM).sum())


def assert_same_quantization(got, expected, w, keep, bits, group_size):
    """codes / scale / zero equal, or a different choice whose error ties."""
    codes, scale, zero = (t.cpu() for t in got)
    e_codes, e_scale, e_zero = (t.cpu() for t in expected)
    N, K = w.shape
    G, glen = reference.num_groups(K, group_size)
    wf = w.float().cpu()
    keep = torch.zeros(N, K, dtype=torch.bool) if keep is None else keep.cpu()
    ties = 0
    for n in range(N):
        for g in range(G):
            cols = slice(g * glen, (g + 1) * glen)
            if scale[n, g] == e_scale[n, g] and zero[n, g] == e_zero[n, g]:
                assert torch.equal(codes[n, cols], e_codes[n, cols]), f"codes differ in group ({n}, {g})"
                continue
            v, span = _statistics_view(wf[n, cols], keep[n, cols])
            e_got = _search_error(v, span, float(scale[n, g]), float(zero[n, g]), bits)
            e_exp = _search_error(v, span, float(e_scale[n, g]), float(e_zero[n, g]), bits)
            assert abs(e_got - e_exp) <= 1e-5 * max(e_got, e_exp), (
                f"group ({n}, {g}): scale/zero {float(scale[n, g])}/{float(zero[n, g])} vs "
                f"{float(e_scale[n, g])}/{float(e_zero[n, g])} with errors {e_got} vs {e_exp} (no tie)")
            ties += 1
    assert ties <= max(1, N * G // 50), f"{ties} of {N * G} groups differ: too many for ties"


def _keep_mask(kind, N, K, gen):
    if kind == "none":
        return None
    if kind == "random":
        return torch.rand(N, K, generator=gen) < 0.05
    keep = torch.zeros(N, K, dtype=torch.bool)
    if kind == "rows":  # row 0 fully kept, row 1 all but one kept
        keep[0] = True
        keep[1 % N, 1:] = True
    return keep


QUANT_CASES = [  # (N, K, group_size)
    (1, 32, -1),
    (3, 100, -1),
    (4, 256, 128),
    (5, 1024, 32),
    (2, 4096, -1),
    (2, 9000, -1),   # longer than the staged limit: values re-read from global memory
    (3, 1536, 512),  # 256-thread blocks on groups
]


@pytest.mark.parametrize("keep_kind", ["none", "random", "rows"])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("case", QUANT_CASES, ids=lambda c: "x".join(map(str, c)))
def test_quantize_matches_cpu(case, bits, keep_kind):
    N, K, group_size = case
    gen = _gen(N * K + bits)
    w = torch.randn(N, K, generator=gen) * 0.02
    keep = _keep_mask(keep_kind, N, K, gen)
    got = ops.quantize(w.cuda(), bits, group_size, None if keep is None else keep.cuda())
    expected = ops.quantize(w, bits, group_size, keep)
    assert got[0].device.type == "cuda" and got[0].dtype == torch.uint8
    assert_same_quantization(got, expected, w, keep, bits, group_size)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_quantize_matches_reference(dtype, bits):
    gen = _gen(bits)
    w = (torch.randn(3, 96, generator=gen) * 0.1).to(dtype)
    keep = torch.rand(3, 96, generator=gen) < 0.1
    for group_size in (-1, 32):
        got = ops.quantize(w.cuda(), bits, group_size, keep.cuda())
        expected = reference.quantize(w, bits, group_size, keep)
        assert_same_quantization(got, expected, w, keep, bits, group_size)


def test_quantize_adversarial_groups():
    """All zeros, only denormals, constant, one nonzero, all positive, huge
    values, exact ties between magnitudes."""
    rows = [
        torch.zeros(64),
        torch.full((64,), 1e-40),
        torch.full((64,), 0.25),
        torch.nn.functional.one_hot(torch.tensor(5), 64).float() * -3.0,
        torch.linspace(0.1, 2.0, 64),
        torch.linspace(-1e38, 1e38, 64),
        torch.tensor([-1.0, 1.0] * 32),
    ]
    w = torch.stack(rows)
    for bits in (2, 3, 4):
        for group_size in (-1, 32):
            got = ops.quantize(w.cuda(), bits, group_size)
            expected = reference.quantize(w, bits, group_size)
            assert_same_quantization(got, expected, w, None, bits, group_size)


def test_quantize_kept_positions_dequantize_to_zero():
    gen = _gen(7)
    w = torch.randn(6, 256, generator=gen)
    keep = torch.rand(6, 256, generator=gen) < 0.2
    codes, scale, zero = ops.quantize(w.cuda(), 3, 64, keep.cuda())
    z = zero.repeat_interleave(64, dim=1)
    assert torch.equal(codes[keep.cuda()].float(), z[keep.cuda()])


def test_quantize_runs_on_the_current_stream():
    w = torch.randn(64, 512, generator=_gen(8))
    expected = ops.quantize(w, 2, 128)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = ops.quantize(w.cuda(), 2, 128)
    stream.synchronize()
    assert_same_quantization(got, expected, w, None, 2, 128)


def test_quantize_empty_rows():
    codes, scale, zero = ops.quantize(torch.zeros(0, 64, device="cuda"), 2, 32)
    assert codes.shape == (0, 64) and scale.shape == (0, 2) and zero.shape == (0, 2)


@pytest.mark.parametrize("with_keep", [False, True])
def test_quantize_opcheck(with_keep):
    gen = _gen(9)
    w = torch.randn(5, 64, generator=gen).cuda()
    keep = (torch.rand(5, 64, generator=gen) < 0.1).cuda() if with_keep else None
    opcheck(torch.ops.tacq.quantize.default, (w, 3, 32, keep))


def test_quantize_bad_input():
    w = torch.randn(4, 64, device="cuda")
    bad = w.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(RuntimeError, match="tacq.quantize: w contains NaN or infinity"):
        ops.quantize(bad, 2, -1)
    bad[2, 3] = float("inf")
    with pytest.raises(RuntimeError, match="tacq.quantize: w contains NaN or infinity"):
        ops.quantize(bad, 2, -1)
    with pytest.raises(RuntimeError, match="tacq.quantize: bits"):
        ops.quantize(w, 5, -1)
    with pytest.raises(RuntimeError, match="tacq.quantize: group_size"):
        ops.quantize(w, 2, 48)
    with pytest.raises(RuntimeError, match="tacq.quantize: keep_mask"):
        ops.quantize(w, 2, -1, torch.zeros(4, 64, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="tacq.quantize: keep_mask"):
        ops.quantize(w, 2, -1, torch.zeros(4, 63, dtype=torch.bool, device="cuda"))

"""tacq.quantize against the pure-torch reference (docs/method.md and the
conventions in tacq_ext/reference.py), on the CPU (every ISA path) and on CUDA,
where the CUDA result is also held to the CPU op's on the same inputs.

Codes, scale and zero must equal the reference's; the only allowed difference
is at a numerical tie of the clipping-search error, where two kernels' error
sums (different pow and summation order) may rank two shrink factors
differently."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import CUDA


def group_error(w, keep, scale, zero, bits):
    """Reference error (fp64) of quantizing one group with (scale, zero)."""
    free = ~keep
    fill = w[free].double().mean().float().clamp(w[free].min(), w[free].max()) if free.any() else torch.tensor(0.0)
    v = torch.where(keep, fill, w).double()
    lo, hi = min(v.min().item(), 0.0), max(v.max().item(), 0.0)
    if hi - lo < torch.finfo(torch.float32).tiny:
        lo, hi = -1.0, 1.0
    q = torch.clamp(torch.round(v / scale) + zero, 0, 2**bits - 1)
    return (((scale * (q - zero) - v) / (hi - lo)).abs() ** 2.4).sum().item()


def assert_matches_reference(w, bits, group_size, keep=None, device="cpu"):
    """tacq.quantize on `device` gives the reference's codes, scale and zero,
    except that at a numerical tie between two shrink factors either choice is
    accepted (its error must be within 1e-5 relative of the reference's best).
    On CUDA the CPU op's result must be the same up to such ties as well."""
    got = ops.quantize(w.to(device), bits, group_size, None if keep is None else keep.to(device))
    assert got[0].device.type == device and got[0].dtype == torch.uint8
    codes, scale, zero = assert_same_up_to_ties(got, reference_quantize(w, bits, group_size, keep),
                                                w, bits, group_size, keep, max_fraction=1 / 20)
    if device != "cpu":
        assert_same_up_to_ties(got, ops.quantize(w, bits, group_size, keep), w, bits, group_size, keep,
                               max_fraction=1 / 50)
    return codes, scale, zero


def assert_same_up_to_ties(got, expected, w, bits, group_size, keep, max_fraction):
    """Each group's codes / scale / zero equal `expected`'s, or the scale and
    zero chosen tie with `expected`'s (error within 1e-5 relative) and the codes
    follow them; at most max(1, max_fraction of the groups) differ."""
    codes, scale, zero = (t.cpu() for t in got)
    r_codes, r_scale, r_zero = (t.cpu() for t in expected)
    N, K = w.shape
    G, glen = reference.num_groups(K, group_size)
    keep = torch.zeros(N, K, dtype=torch.bool) if keep is None else keep
    mismatched = 0
    for n in range(N):
        for g in range(G):
            cols = slice(g * glen, (g + 1) * glen)
            same = (torch.equal(codes[n, cols], r_codes[n, cols]) and scale[n, g] == r_scale[n, g]
                    and zero[n, g] == r_zero[n, g])
            if same:
                continue
            mismatched += 1
            wf = w[n, cols].float()
            ours = group_error(wf, keep[n, cols], scale[n, g].item(), zero[n, g].item(), bits)
            best = group_error(wf, keep[n, cols], r_scale[n, g].item(), r_zero[n, g].item(), bits)
            assert abs(ours - best) <= 1e-5 * max(ours, best) + 1e-30, (
                f"row {n} group {g}: scale/zero {float(scale[n, g])}/{float(zero[n, g])} vs "
                f"{float(r_scale[n, g])}/{float(r_zero[n, g])} with errors {ours} vs {best} (no tie)")
            s, z = scale[n, g], zero[n, g]  # the codes must follow the chosen quantizer
            q = torch.clamp(torch.round(wf / s) + z, 0, 2**bits - 1).to(torch.uint8)
            q = torch.where(keep[n, cols], z.to(torch.uint8), q)
            assert torch.equal(codes[n, cols], q), f"row {n} group {g}: codes do not follow scale/zero"
    assert mismatched <= max(1, int(N * G * max_fraction)), f"{mismatched} of {N * G} groups differ: too many for ties"
    return codes, scale, zero


_REFERENCE = {}


def reference_quantize(w, bits, group_size, keep):
    """reference.quantize, computed once per input for all ISA paths and devices
    (it searches each group's shrink factors in python: ~5 ms a group)."""
    key = (w.dtype, tuple(w.shape), w.float().numpy().tobytes(), bits, group_size,
           None if keep is None else keep.numpy().tobytes())
    if key not in _REFERENCE:
        _REFERENCE[key] = reference.quantize(w.float(), bits, group_size, keep)
    return _REFERENCE[key]


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (3, 31, -1), (4, 64, 32), (2, 100, -1),
                                            (5, 96, 96), (3, 128, 64), (8, 256, -1)])
def test_random_matches_reference(device, cpu_isa, bits, N, K, group_size):
    g = torch.Generator().manual_seed(N * 1000 + K + bits)
    w = torch.randn(N, K, generator=g) * torch.rand(N, 1, generator=g) * 3
    assert_matches_reference(w, bits, group_size, device=device)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("mask_kind", ["none", "random", "all", "one_free"])
def test_keep_mask(device, cpu_isa, bits, mask_kind):
    g = torch.Generator().manual_seed(7)
    N, K, group_size = 6, 128, 32
    w = torch.randn(N, K, generator=g)
    w[0, 5] = 40.0  # an outlier that, kept, must not stretch its group's range
    keep = {"none": torch.zeros(N, K, dtype=torch.bool),
            "random": torch.rand(N, K, generator=g) < 0.2,
            "all": torch.ones(N, K, dtype=torch.bool)}.get(mask_kind)
    if mask_kind == "one_free":
        keep = torch.ones(N, K, dtype=torch.bool)
        keep[:, 3] = False
    keep[0, 5] |= mask_kind != "none"
    codes, scale, zero = assert_matches_reference(w, bits, group_size, keep, device)
    assert torch.equal(codes[keep].float(), zero.repeat_interleave(group_size, dim=1)[keep]), \
        "kept weights must get the zero point's code (dequantize to exactly 0)"
    if mask_kind != "none":
        assert scale[0, 0] < 1.0, "the kept outlier leaked into its group's statistics"


# Long rows (CUDA: past the staged limit, values re-read from global memory),
# groups of 512 (CUDA: 256-thread blocks on groups), many groups of 32; a keep
# mask that keeps whole rows ("rows": row 0 kept, row 1 all but one).
CUDA_CASES = [(1, 32, -1), (3, 100, -1), (4, 256, 128), (5, 1024, 32), (2, 4096, -1), (2, 9000, -1), (3, 1536, 512)]


@pytest.mark.parametrize("device", [CUDA], indirect=True)
@pytest.mark.parametrize("keep_kind", ["none", "random", "rows"])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("case", CUDA_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cuda_matches_cpu(device, case, bits, keep_kind):
    """The CUDA op against the CPU op (itself held to the reference above) on
    shapes where the reference would be slow."""
    N, K, group_size = case
    gen = torch.Generator().manual_seed(N * K + bits)
    w = torch.randn(N, K, generator=gen) * 0.02
    keep = None
    if keep_kind == "random":
        keep = torch.rand(N, K, generator=gen) < 0.05
    elif keep_kind == "rows":
        keep = torch.zeros(N, K, dtype=torch.bool)
        keep[0] = True
        keep[1 % N, 1:] = True
    got = ops.quantize(w.to(device), bits, group_size, None if keep is None else keep.to(device))
    assert got[0].device.type == device and got[0].dtype == torch.uint8
    assert_same_up_to_ties(got, ops.quantize(w, bits, group_size, keep), w, bits, group_size, keep,
                           max_fraction=1 / 50)


def _rows(*rows):
    return lambda: torch.stack([torch.as_tensor(r, dtype=torch.float32) for r in rows])


@pytest.mark.parametrize(
    "name, make",
    [
        ("zeros", lambda: torch.zeros(3, 64)),
        ("all_equal_positive", lambda: torch.full((3, 64), 0.3)),
        ("all_equal_negative", lambda: torch.full((2, 40), -2.5)),
        ("huge", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(1)) * 1e30),
        ("near_float_max", _rows(torch.linspace(-1e38, 1e38, 64), torch.linspace(1e38, -3e37, 64))),
        ("tiny", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(2)) * 1e-30),
        ("denormal", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(3)) * 1e-40),
        ("constant_denormal", lambda: torch.full((2, 64), 1e-40)),
        ("single_spike", lambda: torch.zeros(2, 64).index_fill_(1, torch.tensor([7]), 5.0)),
        ("all_positive", _rows(torch.linspace(0.1, 2.0, 64))),
        ("magnitude_ties", _rows([-1.0, 1.0] * 32, [0.5, -0.5, 0.25, -0.25] * 16)),
        ("one_column", lambda: torch.randn(5, 1, generator=torch.Generator().manual_seed(4))),
    ],
)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_adversarial(device, cpu_isa, name, make, bits):
    """Whole rows, and groups of 32 where K allows them."""
    w = make()
    for group_size in (-1, 32) if w.shape[1] % 32 == 0 else (-1,):
        codes, scale, zero = assert_matches_reference(w, bits, group_size, device=device)
        assert torch.isfinite(scale).all() and (scale > 0).all()
        assert ((zero >= 0) & (zero <= 2**bits - 1) & (zero == zero.round())).all()
        deq = reference.dequantize(ops.pack(codes, bits), scale, zero, bits, group_size, w.shape[1])
        assert torch.isfinite(deq).all()
        if name == "zeros":
            assert torch.all(deq == 0)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_input_dtypes(device, dtype, bits):
    """fp16 / bf16 w: the reference's result for the same values, and exactly
    the result of their fp32 copy."""
    gen = torch.Generator().manual_seed(bits)
    w = (torch.randn(3, 96, generator=gen) * 0.1).to(dtype)
    keep = torch.rand(3, 96, generator=gen) < 0.1
    for group_size in (-1, 32):
        assert_matches_reference(w, bits, group_size, keep, device)
        if dtype != torch.float32:
            a = ops.quantize(w.to(device), bits, group_size, keep.to(device))
            b = ops.quantize(w.float().to(device), bits, group_size, keep.to(device))
            assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_non_contiguous_input():
    w = torch.randn(64, 8, generator=torch.Generator().manual_seed(6)).t()
    assert not w.is_contiguous()
    for a, b in zip(ops.quantize(w, 2, -1), ops.quantize(w.contiguous(), 2, -1)):
        assert torch.equal(a, b)


def test_isa_paths_agree():
    """The portable, AVX2 and AVX-512 builds choose the same quantizer."""
    import os

    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(8))
    results = []
    for isa in ("generic", "avx2", "native"):
        os.environ["TACQ_CPU_ISA"] = isa
        try:
            results.append(ops.quantize(w, 3, 64))
        finally:
            del os.environ["TACQ_CPU_ISA"]
    for other in results[1:]:
        mismatch = sum(not torch.equal(a, b) for a, b in zip(results[0], other))
        assert mismatch == 0


@pytest.mark.parametrize("device", [CUDA], indirect=True)
def test_cuda_runs_on_the_current_stream(device):
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(8))
    expected = ops.quantize(w, 2, 128)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = ops.quantize(w.to(device), 2, 128)
    stream.synchronize()
    assert_same_up_to_ties(got, expected, w, 2, 128, None, max_fraction=1 / 50)


def test_empty_rows(device):
    codes, scale, zero = ops.quantize(torch.zeros(0, 64, device=device), 2, 32)
    assert codes.shape == (0, 64) and scale.shape == (0, 2) and zero.shape == (0, 2)
    assert codes.device.type == device


def test_opcheck(device):
    w = torch.randn(4, 64, device=device)
    keep = torch.rand(4, 64, device=device) < 0.1
    torch.library.opcheck(torch.ops.tacq.quantize.default, (w, 2, 32, keep))
    torch.library.opcheck(torch.ops.tacq.quantize.default, (w, 3, -1, None))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: ops.quantize(torch.tensor([[1.0, float("nan")]], device=d), 2, -1), "w contains NaN or infinity"),
        (lambda d: ops.quantize(torch.tensor([[1.0, float("inf")]], device=d), 2, -1), "w contains NaN or infinity"),
        (lambda d: ops.quantize(torch.zeros(4, 64, device=d).index_fill_(1, torch.tensor([3], device=d), float("nan")),
                                2, 32), "w contains NaN or infinity"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 5, -1), "bits must be 2, 3 or 4"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, 0), "group_size must be"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, 40), "group_size must be"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, 48), "group_size must be"),
        (lambda d: ops.quantize(torch.zeros(2, 96, device=d), 2, 64), "group_size must be"),
        (lambda d: ops.quantize(torch.zeros(2, 3, 4, device=d), 2, -1), "w must be 2-D"),
        (lambda d: ops.quantize(torch.zeros(2, 64, dtype=torch.float64, device=d), 2, -1), "w must have dtype"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, -1, torch.zeros(2, 64, device=d)),
         "keep_mask must have dtype torch.bool"),
        (lambda d: ops.quantize(torch.zeros(2, 64, device=d), 2, -1, torch.zeros(64, 2, dtype=torch.bool, device=d)),
         "keep_mask must have the shape"),
        (lambda d: ops.quantize(torch.zeros(4, 64, device=d), 2, -1, torch.zeros(4, 63, dtype=torch.bool, device=d)),
         "keep_mask must have the shape"),
        (lambda d: ops.quantize(torch.zeros(2, 0, device=d), 2, -1), "K must be >= 1"),
    ],
)
def test_bad_input(device, make, match):
    with pytest.raises(RuntimeError, match=f"tacq.quantize: .*{match}"):
        make(device)

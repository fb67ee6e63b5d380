"""tacq.quantize against the pure-torch reference (docs/method.md and the
conventions in tacq_ext/reference.py)."""

import pytest
import torch

from tacq_ext import ops, reference

from conftest import has_kernel


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
    """Codes, scale and zero equal the reference's, except that at a numerical
    tie between two shrink factors either choice is accepted (its error must be
    within 1e-5 relative of the reference's best)."""
    codes, scale, zero = ops.quantize(w.to(device), bits, group_size,
                                      None if keep is None else keep.to(device))
    codes, scale, zero = codes.cpu(), scale.cpu(), zero.cpu()
    r_codes, r_scale, r_zero = reference.quantize(w.float(), bits, group_size, keep)
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
            assert ours <= best * (1 + 1e-5) + 1e-30, f"row {n} group {g}: error {ours} > reference {best}"
            s, z = scale[n, g], zero[n, g]  # the codes must follow the chosen quantizer
            q = torch.clamp(torch.round(wf / s) + z, 0, 2**bits - 1).to(torch.uint8)
            q = torch.where(keep[n, cols], z.to(torch.uint8), q)
            assert torch.equal(codes[n, cols], q), f"row {n} group {g}: codes do not follow scale/zero"
    assert mismatched <= max(1, N * G // 20), f"{mismatched} of {N * G} groups differ from the reference"
    return codes, scale, zero


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("N,K,group_size", [(1, 1, -1), (3, 31, -1), (4, 64, 32), (2, 100, -1),
                                            (5, 96, 96), (3, 128, 64), (8, 256, -1)])
def test_random_matches_reference(cpu_isa, bits, N, K, group_size):
    g = torch.Generator().manual_seed(N * 1000 + K + bits)
    w = torch.randn(N, K, generator=g) * torch.rand(N, 1, generator=g) * 3
    assert_matches_reference(w, bits, group_size)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("mask_kind", ["none", "random", "all", "one_free"])
def test_keep_mask(cpu_isa, bits, mask_kind):
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
    codes, scale, zero = assert_matches_reference(w, bits, group_size, keep)
    deq = reference.dequantize(ops.pack(codes, bits), scale, zero, bits, group_size, K)
    assert torch.all(deq[keep] == 0), "kept weights must dequantize to exactly 0"
    if mask_kind != "none":
        assert scale[0, 0] < 1.0, "the kept outlier leaked into its group's statistics"


@pytest.mark.parametrize(
    "name, make",
    [
        ("zeros", lambda: torch.zeros(3, 64)),
        ("all_equal_positive", lambda: torch.full((3, 64), 0.3)),
        ("all_equal_negative", lambda: torch.full((2, 40), -2.5)),
        ("huge", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(1)) * 1e30),
        ("tiny", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(2)) * 1e-30),
        ("denormal", lambda: torch.randn(3, 64, generator=torch.Generator().manual_seed(3)) * 1e-40),
        ("single_spike", lambda: torch.zeros(2, 64).index_fill_(1, torch.tensor([7]), 5.0)),
        ("one_column", lambda: torch.randn(5, 1, generator=torch.Generator().manual_seed(4))),
    ],
)
@pytest.mark.parametrize("bits", [2, 4])
def test_adversarial(cpu_isa, name, make, bits):
    w = make()
    codes, scale, zero = assert_matches_reference(w, bits, -1)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert ((zero >= 0) & (zero <= 2**bits - 1) & (zero == zero.round())).all()
    deq = reference.dequantize(ops.pack(codes, bits), scale, zero, bits, -1, w.shape[1])
    assert torch.isfinite(deq).all()
    if name in ("zeros",):
        assert torch.all(deq == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_equal_float_of_same_values(dtype):
    w = torch.randn(6, 96, generator=torch.Generator().manual_seed(5)).to(dtype)
    for a, b in zip(ops.quantize(w, 3, 32), ops.quantize(w.float(), 3, 32)):
        assert torch.equal(a, b)


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
    for isa in ("generic", "avx2", "avx512"):
        os.environ["TACQ_CPU_ISA"] = isa
        try:
            results.append(ops.quantize(w, 3, 64))
        finally:
            del os.environ["TACQ_CPU_ISA"]
    for other in results[1:]:
        mismatch = sum(not torch.equal(a, b) for a, b in zip(results[0], other))
        assert mismatch == 0


def test_opcheck(device):
    if not has_kernel("quantize", device):
        pytest.skip(f"no quantize kernel for {device}")
    w = torch.randn(4, 64, device=device)
    keep = torch.rand(4, 64, device=device) < 0.1
    torch.library.opcheck(torch.ops.tacq.quantize.default, (w, 2, 32, keep))
    torch.library.opcheck(torch.ops.tacq.quantize.default, (w, 3, -1, None))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ops.quantize(torch.tensor([[1.0, float("nan")]]), 2, -1), "w contains NaN or infinity"),
        (lambda: ops.quantize(torch.tensor([[1.0, float("inf")]]), 2, -1), "w contains NaN or infinity"),
        (lambda: ops.quantize(torch.zeros(2, 64), 5, -1), "bits must be 2, 3 or 4"),
        (lambda: ops.quantize(torch.zeros(2, 64), 2, 0), "group_size must be"),
        (lambda: ops.quantize(torch.zeros(2, 64), 2, 40), "group_size must be"),
        (lambda: ops.quantize(torch.zeros(2, 96), 2, 64), "group_size must be"),
        (lambda: ops.quantize(torch.zeros(2, 3, 4), 2, -1), "w must be 2-D"),
        (lambda: ops.quantize(torch.zeros(2, 64, dtype=torch.float64), 2, -1), "w must have dtype"),
        (lambda: ops.quantize(torch.zeros(2, 64), 2, -1, torch.zeros(2, 64)), "keep_mask must have dtype torch.bool"),
        (lambda: ops.quantize(torch.zeros(2, 64), 2, -1, torch.zeros(64, 2, dtype=torch.bool)), "keep_mask must have the shape"),
        (lambda: ops.quantize(torch.zeros(2, 0), 2, -1), "K must be >= 1"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises(RuntimeError, match=match):
        make()

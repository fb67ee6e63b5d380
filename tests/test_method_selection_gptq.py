"""Global top-k selection (docs/method.md step 4) and masked GPTQ (step 5)."""

import pytest
import torch

from tacq_ext import QuantizedLinear, ops, reference
from tacq_ext.gptq import HessianAccumulator, gptq_quantize
from tacq_ext.selection import global_topk_masks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_global_topk_equals_topk_of_concatenation(seed, ties):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 7), (3, 5), (6, 2)]
    make = (lambda s: torch.randint(0, 4, s, generator=g).float()) if ties else (lambda s: torch.rand(s, generator=g))
    scores = {f"layer{i}": make(s) for i, s in enumerate(shapes)}
    flat = torch.cat([s.flatten() for s in scores.values()])
    for k in (0, 1, 7, 20, flat.numel()):
        masks = global_topk_masks(scores, k)
        chosen = torch.cat([m.flatten() for m in masks.values()])
        expected = torch.zeros_like(chosen)
        expected[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
        assert torch.equal(chosen, expected)
        if not ties and k:
            assert torch.equal(flat[chosen].sort().values, torch.topk(flat, k).values.sort().values)


def test_global_topk_rejects_bad_scores():
    with pytest.raises(ValueError, match="finite and >= 0"):
        global_topk_masks({"a": torch.tensor([1.0, -1.0])}, 1)
    with pytest.raises(ValueError, match="k must be in"):
        global_topk_masks({"a": torch.ones(3)}, 4)


def reference_gptq(W, H, bits, group_size, keep, damp=0.01):
    """Column-by-column GPTQ written from the paper's update rule with an
    explicitly eliminated inverse Hessian (no Cholesky, no lazy blocks)."""
    W = W.double().clone()
    N, K = W.shape
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=torch.float64)
    Hinv = torch.linalg.inv(H)
    keep = torch.zeros(N, K, dtype=torch.bool) if keep is None else keep
    glen = K if group_size == -1 else group_size
    codes = torch.zeros(N, K, dtype=torch.uint8)
    maxq = 2**bits - 1
    for i in range(K):
        if i % glen == 0:
            cols = slice(i, i + glen) if group_size != -1 else slice(0, K)
            _, s, z = reference.quantize(W[:, cols].float(), bits, -1, keep[:, cols])
            s, z = s[:, 0].half().double(), z[:, 0].double()
        w = W[:, i].clone()
        q = torch.clamp(torch.round(w.float() / s.float()).double() + z, 0, maxq)
        dq = torch.where(keep[:, i], w, s * (q - z))
        codes[:, i] = torch.where(keep[:, i], z, q).to(torch.uint8)
        err = (w - dq) / Hinv[i, i]
        W[:, i] = dq
        W[:, i + 1:] -= err[:, None] * Hinv[i, i + 1:][None, :]
        Hinv = Hinv - Hinv[:, i:i + 1] @ Hinv[i:i + 1, :] / Hinv[i, i]
    return codes, W.float()


def layer_problem(seed, N=12, K=64, tokens=200):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g)
    X = torch.randn(tokens, K, generator=g) @ torch.randn(K, K, generator=g) * 0.3
    return W, 2 * X.T @ X / tokens


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("group_size", [-1, 32])
@pytest.mark.parametrize("with_mask", [False, True])
def test_gptq_matches_straightforward_reference(bits, group_size, with_mask):
    W, H = layer_problem(bits * 10 + (group_size > 0))
    keep = (torch.rand(W.shape, generator=torch.Generator().manual_seed(9)) < 0.05) if with_mask else None
    result = gptq_quantize(W, H, bits, group_size, keep, block_size=16)
    codes, W_ref = reference_gptq(W, H, bits, group_size, keep)
    agree = (result.codes == codes).float().mean().item()
    assert agree > 0.97, f"only {agree:.3f} of the codes agree with the reference"
    # objective: the layer output error tr((W - Q) H (W - Q)^T) is the same to within a rounding flip or two
    def loss(Q):
        D = (W - Q).double()
        return torch.trace(D @ H.double() @ D.T).item()
    assert loss(result.weight) == pytest.approx(loss(W_ref), rel=0.05)
    if keep is not None:
        assert torch.all(result.codes[keep] == result.zero.repeat_interleave(
            W.shape[1] // result.zero.shape[1], dim=1)[keep].to(torch.uint8))


def test_empty_mask_equals_plain_gptq():
    W, H = layer_problem(3)
    plain = gptq_quantize(W, H, 3, -1, None)
    masked = gptq_quantize(W, H, 3, -1, torch.zeros(W.shape, dtype=torch.bool))
    assert torch.equal(plain.codes, masked.codes) and torch.equal(plain.weight, masked.weight)


def test_kept_weights_absorb_updates_and_cut_the_error():
    W, H = layer_problem(4)
    keep = torch.zeros(W.shape, dtype=torch.bool)
    keep[:, 40] = True
    result = gptq_quantize(W, H, 2, -1, keep)
    assert not torch.allclose(result.weight[:, 40], W[:, 40]), "kept column should absorb GPTQ updates"
    deq = ops.dequantize(ops.pack(result.codes, 2), result.scale, result.zero, 2, -1, W.shape[1])
    assert torch.all(deq[keep] == 0)
    def loss(Q):
        D = (W - Q).double()
        return torch.trace(D @ H.double() @ D.T).item()
    assert loss(result.weight) < loss(gptq_quantize(W, H, 2, -1, None).weight)


@pytest.mark.parametrize("group_size", [-1, 32])
def test_degenerate_rows_stay_finite(group_size):
    """Rows of equal, zero, tiny or huge weights and rows kept almost or
    entirely in fp16 must quantize to finite codes, scales and weights."""
    W, H = layer_problem(5, N=9)
    W[0] = 0.0
    W[1] = 3.0
    W[2] = -2.0
    W[3] = 1e-30
    W[4] = 1e-9 * torch.randn(W.shape[1])
    W[5] = 1e6
    keep = torch.zeros(W.shape, dtype=torch.bool)
    keep[6] = True            # all kept
    keep[7, 1:] = True        # all kept but one
    keep[8, ::2] = True       # half kept
    H[:, 10] = H[10, :] = 0   # a dead input as well
    for bits in (2, 3, 4):
        result = gptq_quantize(W, H, bits, group_size, keep, block_size=16)
        for name in ("scale", "zero", "weight"):
            assert torch.isfinite(getattr(result, name)).all(), f"{name} not finite at {bits} bits"
        assert (result.scale > 0).all() and torch.equal(result.scale, result.scale.half().float())
        assert int(result.codes.max()) <= 2**bits - 1
        deq = ops.dequantize(ops.pack(result.codes, bits), result.scale, result.zero, bits, group_size, W.shape[1])
        assert torch.isfinite(deq).all()
        # constant rows come back up to the fp16 scale (the dead input is zeroed); tiny rows round to ~0
        live = torch.arange(W.shape[1]) != 10
        for row in (0, 1, 2, 6):  # row 6: all kept, nothing quantized, nothing to compensate
            torch.testing.assert_close(result.weight[row, live], W[row, live], rtol=1e-3, atol=0)
        assert result.weight[3].abs().max() < 1e-6 and result.weight[4].abs().max() < 1e-6
        layer = QuantizedLinear.from_quantized(result.codes, result.scale, result.zero, result.weight, keep,
                                               bits, group_size)
        for rows in (1, 40):  # fused gemv and dequantize + matmul
            assert torch.isfinite(layer(torch.randn(rows, W.shape[1]))).all()



def _cancelling_batches(seed, K=64):
    """Batches whose x^T x sums cancel: big rows (about 1e4, like a model's
    outlier channels), small rows (about 1e-4), and the big rows again with
    every other column negated, so entries (even, odd) of the big parts cancel
    exactly and those entries are the small rows' alone. Plain fp64 sums lose
    the small parts in some orders (16 decimal digits between them)."""
    g = torch.Generator().manual_seed(seed)
    big = 1e4 * torch.randn(8, K, generator=g, dtype=torch.float64)
    flip = torch.ones(K, dtype=torch.float64)
    flip[1::2] = -1
    small = [1e-4 * torch.randn(8, K, generator=g, dtype=torch.float64) for _ in range(2)]
    batches = [big, small[0], big * flip, small[1]]
    pairs = torch.outer(flip, flip)  # -1 where the big parts cancel
    exact_big = (big.T @ big) * (1 + pairs)  # 2 (big^T big) or exactly 0
    expected = 2 * (exact_big + small[0].T @ small[0] + small[1].T @ small[1]) / 32
    return batches, expected


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3], [1, 0, 3, 2]])
def test_hessian_is_the_same_in_any_order_and_split(seed, order):
    """One accumulator over the batches in any order, and the batches split
    over two accumulators then merged (what data-parallel ranks do), give
    bit-identical fp32 Hessians: 2/n sum x x^T, the cancelling entries too."""
    batches, expected = _cancelling_batches(seed)

    def accumulate(parts):
        acc = HessianAccumulator(batches[0].shape[1], "cpu")
        for i in parts:
            acc.add(batches[i])
        return acc

    whole = accumulate(order).hessian()
    torch.testing.assert_close(whole.double(), expected, rtol=2 ** -22, atol=0)
    assert torch.equal(whole, accumulate(range(4)).hessian())
    first, second = accumulate(order[0::2]), accumulate(order[1::2])
    first.merge(second.hi, second.lo)
    first.count += second.count
    assert torch.equal(first.hessian(), whole)

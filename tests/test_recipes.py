"""Recipes beyond the paper's, as TACQConfig options: act-order GPTQ with
kept weights, and kept-weight budgets split over layers or rows by score mass."""

import pytest
import torch

import tacq_ext
from tacq_ext import ops
from tacq_ext.budget import mass_budget_masks, split_by_mass
from tacq_ext.config import TACQConfig
from tacq_ext.gptq import gptq_quantize

from method_fixtures import lm_batch, tiny_llama


def _problem(seed=0, N=24, K=96):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g)
    X = torch.randn(256, K, generator=g) * torch.linspace(0.2, 3.0, K)[torch.randperm(K, generator=g)]
    keep = torch.rand(N, K, generator=g) < 0.03
    return W, 2 * X.T @ X / X.shape[0], keep


def test_act_order_is_plain_gptq_when_the_diagonal_is_already_decreasing():
    W, H, keep = _problem()
    order = torch.argsort(torch.diag(H), descending=True)
    W, H, keep = W[:, order], H[order][:, order], keep[:, order]
    plain = gptq_quantize(W, H, 2, -1, keep)
    ordered = gptq_quantize(W, H, 2, -1, keep, act_order=True)
    for a, b in zip((plain.codes, plain.scale, plain.zero, plain.weight),
                    (ordered.codes, ordered.scale, ordered.zero, ordered.weight)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("group_size", [-1, 32])
def test_act_order_does_not_depend_on_the_input_column_order(group_size):
    """Per row, permuting the columns of W and H permutes the result; with
    groups (fixed to contiguous original columns) only a permutation of whole
    groups does."""
    W, H, keep = _problem(1)
    K = W.shape[1]
    p = torch.randperm(K, generator=torch.Generator().manual_seed(3))
    if group_size != -1:
        p = torch.cat([torch.arange(g * 32, (g + 1) * 32) for g in (2, 0, 1)])
    base = gptq_quantize(W, H, 3, group_size, keep, act_order=True)
    moved = gptq_quantize(W[:, p], H[p][:, p], 3, group_size, keep[:, p], act_order=True)
    assert torch.equal(moved.codes, base.codes[:, p])
    assert torch.allclose(moved.weight, base.weight[:, p], atol=1e-5)
    if group_size != -1:
        assert torch.equal(moved.scale, base.scale[:, [2, 0, 1]])


@pytest.mark.parametrize("group_size", [-1, 32])
def test_act_order_keeps_the_stored_format(group_size):
    """Kept positions hold the zero code and their final value; the others
    are exactly what the stored codes dequantize to."""
    W, H, keep = _problem(2)
    r = gptq_quantize(W, H, 2, group_size, keep, act_order=True)
    deq = ops.dequantize(ops.pack(r.codes, 2), r.scale, r.zero, 2, group_size, W.shape[1])
    assert torch.equal(r.weight[~keep], deq[~keep])
    glen = W.shape[1] if group_size == -1 else group_size
    zeros = r.zero.repeat_interleave(glen, dim=1)
    assert torch.equal(r.codes[keep].float(), zeros[keep])


def test_act_order_lowers_the_hessian_weighted_error_on_skewed_inputs():
    """What act order is for: tr((W - Q) H (W - Q)^T) with a few dominant
    input channels, per-row 2-bit, summed over several problems."""
    plain = ordered = 0.0
    for seed in range(4):
        W, H, keep = _problem(seed)
        for act_order in (False, True):
            E = gptq_quantize(W, H, 2, -1, keep, act_order=act_order).weight - W
            err = float(torch.trace(E @ H @ E.T))
            plain, ordered = (plain + err, ordered) if not act_order else (plain, ordered + err)
    assert ordered < plain


def test_act_order_runs_through_quantize_model():
    model = tiny_llama()
    cfg = TACQConfig(bits=2, group_size=32, ratio=0.02, method="tacq", act_order=True)
    report = tacq_ext.quantize_model(model, [lm_batch(1), lm_batch(2)], cfg, progress=False)
    assert report.kept > 0 and all(l.error < 1 for l in report.layers)


def test_act_order_must_be_a_bool():
    with pytest.raises(ValueError, match="act_order"):
        TACQConfig(act_order="yes")


def test_split_by_mass_is_proportional_and_respects_capacities():
    assert split_by_mass(torch.tensor([1.0, 3.0]), torch.tensor([10, 10]), 8).tolist() == [2, 6]
    assert split_by_mass(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([10, 10, 10]), 4).tolist() in (
        [2, 1, 1], [1, 2, 1], [1, 1, 2])
    # the heavy unit is capped at 2; what it cannot take goes to the others by their mass
    assert split_by_mass(torch.tensor([100.0, 1.0, 3.0]), torch.tensor([2, 10, 10]), 10).tolist() == [2, 2, 6]
    assert split_by_mass(torch.tensor([0.0, 0.0]), torch.tensor([3, 3]), 4).tolist() in ([2, 2],)
    assert split_by_mass(torch.tensor([1.0]), torch.tensor([3]), 5).tolist() == [3]


@pytest.mark.parametrize("by", ["layer", "row"])
def test_mass_budget_keeps_k_weights_split_by_score_mass(by):
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(4, 8, generator=g), "b": 3 * torch.rand(6, 8, generator=g)}
    masks = mass_budget_masks(scores, 12, by)
    assert sum(int(m.sum()) for m in masks.values()) == 12
    units = {n: (s.sum().reshape(1), m.sum().reshape(1)) if by == "layer" else (s.sum(1), m.sum(1))
             for (n, s), m in zip(scores.items(), masks.values())}
    mass = torch.cat([u[0] for u in units.values()])
    kept = torch.cat([u[1] for u in units.values()]).double()
    assert torch.all((kept - 12 * mass / mass.sum()).abs() < 1)  # floor or ceil of its share
    for name, s in scores.items():  # within a unit, the largest scores
        m = masks[name] if by == "row" else masks[name].reshape(1, -1)
        s = s if by == "row" else s.reshape(1, -1)
        for row_s, row_m in zip(s, m):
            if row_m.any() and not row_m.all():
                assert row_s[row_m].min() >= row_s[~row_m].max()


@pytest.mark.parametrize("budget", ["layer", "row"])
def test_mass_budgets_run_through_quantize_model(budget):
    model = tiny_llama()
    cfg = TACQConfig(bits=2, ratio=0.02, method="tacq", reference="rtn", budget=budget)
    report = tacq_ext.quantize_model(model, [lm_batch(1)], cfg, progress=False)
    assert report.kept == int(0.02 * report.parameters)


def test_budget_must_be_known():
    with pytest.raises(ValueError, match="budget"):
        TACQConfig(budget="per_layer")
    with pytest.raises(ValueError, match="by must be"):
        mass_budget_masks({"a": torch.rand(2, 2)}, 1, "column")

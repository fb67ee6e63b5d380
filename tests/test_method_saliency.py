"""Saliency (DESIGN.md §1.1 step 2) against brute-force per-sample autograd."""

import pytest
import torch
import torch.nn as nn

from tacq_ext.saliency import accumulate_gradient_stats, default_loss
from tacq_ext.targets import find_targets

from method_fixtures import lm_batch, tiny_llama


def brute_force(model, samples, loss_of_sample, targets, squared=False):
    """sum_s |dL_s/dW| (or its square), one sample at a time, with weight grads."""
    out = {n: torch.zeros_like(m.weight) for n, m in targets.items()}
    for sample in samples:
        model.zero_grad()
        loss_of_sample(sample).backward()
        for n, m in targets.items():
            out[n] += m.weight.grad ** 2 if squared else m.weight.grad.abs()
    return out


def split_samples(batch):
    B = batch["input_ids"].shape[0]
    return [{k: v[b:b + 1] for k, v in batch.items()} for b in range(B)]


@pytest.mark.parametrize("squared", [False, True])
def test_llama_matches_per_sample_autograd(squared):
    model = tiny_llama()
    targets = find_targets(model)
    batches = [lm_batch(1), lm_batch(2)]
    ours = accumulate_gradient_stats(model, batches, targets, squared=squared, progress=False)
    samples = [s for b in batches for s in split_samples(b)]
    ref = brute_force(model, samples, lambda s: default_loss(model, s), targets, squared)
    assert set(ours) == set(ref) and len(ours) == 14
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=2e-4, atol=1e-6)


def test_batching_does_not_change_scores():
    model = tiny_llama()
    targets = find_targets(model)
    batch = lm_batch(3, B=4)
    together = accumulate_gradient_stats(model, [batch], targets, progress=False)
    apart = accumulate_gradient_stats(model, split_samples(batch), targets, progress=False)
    for name in together:
        torch.testing.assert_close(together[name], apart[name], rtol=2e-4, atol=1e-6)


def test_no_weight_gradients_are_allocated():
    model = tiny_llama()
    targets = find_targets(model)
    accumulate_gradient_stats(model, [lm_batch(4)], targets, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters()), "requires_grad flags must be restored"


class SharedMLP(nn.Module):
    """A layer used twice per forward, plus a head."""

    def __init__(self, width=8, outputs=3, activation=torch.relu):
        super().__init__()
        self.shared = nn.Linear(width, width)
        self.head = nn.Linear(width, outputs)
        self.activation = activation

    def forward(self, x):
        return self.head(self.activation(self.shared(self.activation(self.shared(x)))))


def test_custom_loss_and_module_called_twice():
    torch.manual_seed(0)
    model = SharedMLP()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(5, 4, 8, generator=g), torch.randn(5, 4, 3, generator=g)) for _ in range(2)]

    def loss_fn(m, batch):  # a sum of per-sample losses; the batch is a tuple
        x, y = batch
        return ((m(x) - y) ** 2).mean(dim=(1, 2)).sum()

    targets = find_targets(model)
    ours = accumulate_gradient_stats(model, data, targets, loss_fn=loss_fn, progress=False)
    samples = [(x[i:i + 1], y[i:i + 1]) for x, y in data for i in range(5)]
    ref = brute_force(model, samples, lambda s: loss_fn(model, s), targets)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6)


def test_two_dimensional_inputs_are_rows_of_samples():
    """Fed [B, K]: no sequence axis, each row is one sample; `shared` runs twice."""
    torch.manual_seed(0)
    model = SharedMLP(width=6, outputs=2, activation=torch.tanh)
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(7, 6, generator=g), torch.randn(7, 2, generator=g)) for _ in range(2)]

    def loss_fn(m, batch):
        x, y = batch
        return ((m(x) - y) ** 2).sum()

    targets = find_targets(model)
    for squared in (False, True):
        ours = accumulate_gradient_stats(model, data, targets, loss_fn=loss_fn, squared=squared, progress=False)
        samples = [(x[i:i + 1], y[i:i + 1]) for x, y in data for i in range(7)]
        ref = brute_force(model, samples, lambda s: loss_fn(model, s), targets, squared)
        for name in ref:
            torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-6)


def test_all_labels_masked_is_an_error():
    model = tiny_llama()
    batch = lm_batch(5)
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="at least one label != -100"):
        accumulate_gradient_stats(model, [batch], find_targets(model), progress=False)


def test_empty_calibration_is_an_error():
    model = tiny_llama()
    with pytest.raises(ValueError, match="calibration data is empty"):
        accumulate_gradient_stats(model, [], find_targets(model), progress=False)

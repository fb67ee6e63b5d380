"""Saliency (docs/method.md, step 2) against brute-force per-sample autograd."""

import pytest
import torch
import torch.nn as nn

from tacq_ext.saliency import (_blocks_checkpointed, _GradientTap, _parameters_frozen, accumulate_gradient_stats,
                               default_loss)
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


@pytest.mark.parametrize("squared", [False, True])
def test_activation_checkpointing_gives_the_same_statistics(squared):
    model = tiny_llama()
    targets = find_targets(model)
    batches = [lm_batch(5), lm_batch(6)]
    plain = accumulate_gradient_stats(model, batches, targets, squared=squared, progress=False)
    checkpointed = accumulate_gradient_stats(model, batches, targets, squared=squared, progress=False,
                                             activation_checkpointing=True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)
    assert model.config.use_cache is True
    assert all("forward" not in block.__dict__ for block in model.model.layers), "block forwards must be restored"


def test_activation_checkpointing_keeps_only_block_inputs():
    """During the forward pass, checkpointed blocks leave autograd only their
    inputs, and the tap keeps no input of a target inside a block (every
    target of the tiny Llama is; LoopedBlocks below has one outside)."""
    model = tiny_llama()
    targets = find_targets(model)
    batch = lm_batch(7, B=2, T=64, pad=0)
    for enabled in (False, True):
        tap = _GradientTap(targets, lambda name, pairs: None)
        saved = []

        def pack(t):
            saved.append(t.numel() * t.element_size())
            return t

        with _parameters_frozen(model), _blocks_checkpointed(model, tap, enabled):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = default_loss(model, batch)
            kept = {n for n, xs in tap.inputs.items() if any(x is not None for x in xs)}
            tap.backward(loss)
        tap.remove()
        if enabled:
            assert kept == set()
            assert sum(saved) < 0.4 * plain_saved
        else:
            assert kept == set(targets)
            plain_saved = sum(saved)


class LoopedBlocks(nn.Module):
    """Decoder-style blocks (model.layers) with each block run twice per
    forward: two checkpointed regions per block."""

    def __init__(self, width=16):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(2))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        for _ in range(2):
            for block in self.model.layers:
                x = block(x) * 0.5 + x
        return self.head(x)


def test_activation_checkpointing_pairs_recomputed_inputs_with_their_call():
    torch.manual_seed(0)
    model = LoopedBlocks()
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(4, 5, 16, generator=g), torch.randn(4, 5, 3, generator=g))]

    def loss_fn(m, batch):
        x, y = batch
        return ((m(x) - y) ** 2).mean(dim=(1, 2)).sum()

    targets = find_targets(model)
    plain = accumulate_gradient_stats(model, data, targets, loss_fn=loss_fn, progress=False)
    checkpointed = accumulate_gradient_stats(model, data, targets, loss_fn=loss_fn, progress=False,
                                             activation_checkpointing=True)
    samples = [(x[i:i + 1], y[i:i + 1]) for x, y in data for i in range(4)]
    ref = brute_force(model, samples, lambda s: loss_fn(model, s), targets)
    for name in ref:
        torch.testing.assert_close(plain[name], ref[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(checkpointed[name], ref[name], rtol=1e-4, atol=1e-6)


def test_activation_checkpointing_needs_decoder_blocks():
    model = SharedMLP()
    with pytest.raises(ValueError, match="activation_checkpointing needs a model with decoder blocks"):
        accumulate_gradient_stats(model, [(torch.randn(2, 8), None)], find_targets(model),
                                  loss_fn=lambda m, b: m(b[0]).sum(), progress=False, activation_checkpointing=True)

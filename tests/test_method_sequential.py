"""Block-by-block passes (docs/method.md, step 5): Hessians from the quantized prefix,
each block run a bounded number of times, the fallback for unknown structure,
and the spqr_like scores built on them."""

import torch
import torch.nn as nn

from tacq_ext import TACQConfig
from tacq_ext.gptq import gptq_quantize, hessian_inverse_factor
from tacq_ext.pipeline import _spqr_scores, compute_saliency
from tacq_ext.sequential import collect_hessians, quantize_sequentially
from tacq_ext.targets import find_targets, targets_by_block

from method_fixtures import copy_model, lm_batch, tiny_llama


def coarse(W):
    """A crude quantizer that changes every weight (std 0.02) without zeroing
    them all, so each block's output depends on its quantized prefix."""
    return torch.round(W * 100) / 100


def checked_coarse_quantizer(model, calib, targets, groups, loss_fn=None, tolerance=1e-5):
    """A quantize_group that checks each Hessian against whole-model forwards
    through the prefix as it is now, records the group, and quantizes it coarsely."""
    def quantize_group(hessians):
        expected = collect_hessians(model, calib, {n: targets[n] for n in hessians}, loss_fn, progress=False)
        for name, H in hessians.items():
            torch.testing.assert_close(H, expected[name], rtol=tolerance * 10, atol=tolerance)
        groups.append(sorted(hessians))
        for name in hessians:
            targets[name].weight.data = coarse(targets[name].weight.data)
        return {}
    return quantize_group


def test_hessians_come_from_the_quantized_prefix():
    model = tiny_llama()
    calib = [lm_batch(20), lm_batch(21, B=2, pad=0)]
    targets = find_targets(model)
    per_block, _ = targets_by_block(model, targets)
    groups = []
    quantize_sequentially(model, calib, targets, checked_coarse_quantizer(model, calib, targets, groups),
                          progress=False)
    assert groups == [sorted(names) for names in per_block], "one call per block, one block's layers each"


def test_each_block_runs_a_bounded_number_of_times():
    model = tiny_llama()
    calib = [lm_batch(22), lm_batch(23)]
    targets = find_targets(model)
    runs = [0] * len(model.model.layers)
    for i, block in enumerate(model.model.layers):
        block.register_forward_pre_hook(lambda m, a, i=i: runs.__setitem__(i, runs[i] + 1))
    quantize_sequentially(model, calib, targets, lambda h: {}, progress=False)
    # capture pass, Hessian pass, advance pass (none after the last block)
    assert runs[:-1] == [3 * len(calib)] * (len(runs) - 1) and runs[-1] == 2 * len(calib)


def test_overrides_feed_later_blocks_and_the_model_is_left_unchanged():
    model = tiny_llama()
    calib = [lm_batch(24)]
    targets = find_targets(model)
    before = {n: m.weight.detach().clone() for n, m in targets.items()}
    reference = copy_model(model)
    ref_targets = find_targets(reference)
    seen = {}

    def quantize_group(hessians):
        seen.update(hessians)
        return {n: coarse(targets[n].weight) for n in hessians}

    quantize_sequentially(model, calib, targets, quantize_group, progress=False)
    for name, m in targets.items():
        assert torch.equal(m.weight, before[name]), "overrides must not stay in the model"
    # the same pass done by hand: quantize the prefix for real, whole-model forwards
    per_block, _ = targets_by_block(reference, ref_targets)
    for names in per_block:
        expected = collect_hessians(reference, calib, {n: ref_targets[n] for n in names}, progress=False)
        for n in names:
            torch.testing.assert_close(seen[n], expected[n], rtol=1e-4, atol=1e-5)
            ref_targets[n].weight.data = coarse(ref_targets[n].weight.data)


class Recurrent(nn.Module):
    """Has model.layers, but runs every block twice: not a chain of blocks."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(2))

    def forward(self, x):
        for _ in range(2):
            for layer in self.model.layers:
                x = layer(x)
        return x


def test_unknown_structure_falls_back_to_whole_model_passes():
    torch.manual_seed(0)
    model = Recurrent()
    calib = [torch.randn(4, 3, 8) for _ in range(2)]
    loss_fn = lambda m, x: m(x).pow(2).sum()  # noqa: E731
    targets = find_targets(model)
    calls = []
    quantize_sequentially(model, calib, targets, checked_coarse_quantizer(model, calib, targets, calls, loss_fn),
                          loss_fn, progress=False)
    assert calls == [[n] for n in targets]


def test_spqr_scores_use_hessians_of_the_gptq_quantized_prefix():
    model = tiny_llama()
    calib = [lm_batch(25), lm_batch(26)]
    cfg = TACQConfig(bits=2, method="spqr_like", ratio=0.01)
    targets = find_targets(model)
    ours = _spqr_scores(model, calib, targets, cfg, None, progress=False)

    reference = copy_model(model)
    ref_targets = find_targets(reference)
    per_block, _ = targets_by_block(reference, ref_targets)
    for names in per_block:
        hessians = collect_hessians(reference, calib, {n: ref_targets[n] for n in names}, progress=False)
        for n in names:
            W = ref_targets[n].weight.detach().float()
            hinv = torch.linalg.inv(hessians[n].double() + cfg.damp * hessians[n].diag().mean().double()
                                    * torch.eye(W.shape[1], dtype=torch.float64))
            expected = W ** 2 / hinv.diag().float()[None, :] ** 2
            torch.testing.assert_close(ours[n], expected, rtol=1e-3, atol=0)
            ref_targets[n].weight.data = gptq_quantize(W, hessians[n], 2, -1).weight
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 tiny_llama().state_dict().values())), "model changed"


def test_compute_saliency_leaves_the_model_unchanged():
    model = tiny_llama()
    compute_saliency(model, [lm_batch(27)], TACQConfig(bits=2), progress=False)
    for a, b in zip(model.state_dict().values(), tiny_llama().state_dict().values()):
        assert torch.equal(a, b)


def test_inverse_hessian_diagonal_matches_explicit_inverse():
    H = torch.randn(16, 16, dtype=torch.float64)
    H = (H @ H.T).float()
    U = hessian_inverse_factor(H, 0.01)
    damped = H.double() + 0.01 * H.diag().mean().double() * torch.eye(16, dtype=torch.float64)
    torch.testing.assert_close((U * U).sum(0).double(), torch.linalg.inv(damped).diag(), rtol=1e-4, atol=0)


def test_targets_outside_the_blocks_follow_them():
    """A filter choosing lm_head as well: it is quantized last, on inputs
    through the quantized blocks; a filter choosing only lm_head works too."""
    model = tiny_llama()
    calib = [lm_batch(28)]
    targets = find_targets(model, lambda name, m: name.startswith("model.layers.1.mlp") or name == "lm_head")
    order = []
    quantize_sequentially(model, calib, targets, checked_coarse_quantizer(model, calib, targets, order),
                          progress=False)
    assert order == [sorted(n for n in targets if n != "lm_head"), ["lm_head"]]
    only_head = find_targets(model, lambda name, m: name == "lm_head")
    quantize_sequentially(model, calib, only_head, lambda h: order.append(list(h)) or {}, progress=False)
    assert order[-1] == ["lm_head"]


class Memory:
    """A key/value store with a cache's interface, as a library other than
    transformers might pass it: update() appends and returns everything seen."""

    def __init__(self):
        self.keys = {}

    def update(self, k, layer):
        self.keys[layer] = torch.cat([self.keys[layer], k], dim=1) if layer in self.keys else k
        return self.keys[layer]

    def get_seq_length(self):
        return next(iter(self.keys.values())).shape[1] if self.keys else 0


class MemoryBlock(nn.Module):
    """Attends over every key its memory holds, taken under the keyword `kv_store`."""

    def __init__(self, layer, width=16):
        super().__init__()
        self.layer = layer
        self.key, self.out = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, hidden, kv_store=None):
        k = self.key(hidden)
        if kv_store is not None:
            k = kv_store.update(k, self.layer)
        attn = torch.softmax(hidden @ k.transpose(1, 2), dim=-1) @ k
        return hidden + self.out(attn)


class MemoryModel(nn.Module):
    """Decoder blocks at model.model.layers; a fresh Memory per forward while
    config.use_cache is on, passed to the blocks under a keyword no library uses."""

    def __init__(self, pass_memory_positionally=False):
        super().__init__()
        self.config = type("Config", (), {"use_cache": True})()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(MemoryBlock(i) for i in range(3))
        self.positional = pass_memory_positionally

    def forward(self, x):
        memory = Memory() if self.config.use_cache else None
        for block in self.model.layers:
            x = block(x, memory) if self.positional else block(x, kv_store=memory)
        return x


def test_a_cache_under_any_keyword_or_position_is_not_replayed():
    for positional in (False, True):
        torch.manual_seed(0)
        model = MemoryModel(positional)
        calib = [torch.randn(2, 5, 16) for _ in range(2)]
        loss_fn = lambda m, x: m(x).pow(2).sum()  # noqa: E731
        targets = find_targets(model)
        groups = []
        quantize_sequentially(model, calib, targets,
                              checked_coarse_quantizer(model, calib, targets, groups, loss_fn), loss_fn,
                              progress=False)
        assert groups == [sorted(names) for names in targets_by_block(model, targets)[0]]
        assert model.config.use_cache, "the cache setting is restored after the pass"


def test_tiny_llama_quantizes_block_by_block_with_its_cache_on():
    model = tiny_llama()
    model.config.use_cache = True
    calib = [lm_batch(30), lm_batch(31)]
    targets = find_targets(model)
    groups = []
    quantize_sequentially(model, calib, targets, checked_coarse_quantizer(model, calib, targets, groups),
                          progress=False)
    assert len(groups) == len(model.model.layers)
    assert model.config.use_cache

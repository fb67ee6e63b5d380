"""Per-sample gradient statistics of the target layers (DESIGN.md §1.1 step 2).

One forward/backward per calibration batch. Forward hooks keep each target
call's input and output; ``torch.autograd.grad`` with the outputs as inputs
returns the loss gradient at each output without ever forming weight
gradients; each module's calls are concatenated along the token axis (so a
sample's gradient sums over all calls before the absolute value) and reduced
by ``tacq.saliency_accumulate`` into one fp32 [N, K] accumulator per layer:
A = sum_s |G_s|, G_s = sum_t delta_{s,t} x_{s,t}^T. The squared variant
(Fisher, for squeezellm_like) is sum_s G_s^2.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import ops

LossFn = Callable[[nn.Module, object], torch.Tensor]


def default_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Sum over samples of each sample's mean next-token cross-entropy on its
    supervised positions (labels != -100): per-sample gradients are exactly
    those of the sample run alone, so batching cannot change the scores."""
    if not isinstance(batch, dict) or "input_ids" not in batch or "labels" not in batch:
        raise ValueError("the default loss needs batches that are dicts with 'input_ids' and 'labels'; "
                         "pass loss_fn= for other batches")
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    targets = labels[:, 1:]
    supervised = targets != -100
    counts = supervised.sum(dim=1)
    if not bool((counts > 0).all()):
        raise ValueError("every calibration sample needs at least one label != -100 "
                         "(the loss is on the answer tokens); found a sample with none")
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).clamp(min=0),
                         reduction="none").view_as(targets)
    return ((ce * supervised).sum(dim=1) / counts).sum()


@contextlib.contextmanager
def _weights_frozen(model: nn.Module, targets: Dict[str, nn.Linear]):
    """No parameter requires grad except target weights, which must stay in the
    graph so their outputs carry gradients; autograd.grad never computes them."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for m in targets.values():
            m.weight.requires_grad_(True)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)


class _CallRecorder:
    """Forward hooks recording (input, output) of every call of every target."""

    def __init__(self, targets: Dict[str, nn.Linear]):
        self.calls: Dict[str, List[tuple]] = {n: [] for n in targets}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in targets.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.calls[name].append((inputs[0].detach(), output))
        return hook

    def clear(self):
        for calls in self.calls.values():
            calls.clear()

    def remove(self):
        for h in self.handles:
            h.remove()


def _as_samples(t: torch.Tensor) -> torch.Tensor:
    """[B, ..., C] -> [B, tokens, C]. The first axis is always the samples: a
    2-D input [B, C] is B samples of one token each, a 1-D input one sample."""
    if t.dim() == 1:
        return t.reshape(1, 1, -1)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _per_sample_streams(pairs: List[tuple]):
    """(x, grad) of one layer's calls -> [B, tokens, C] pairs. Calls with the
    same batch size are joined along the token axis, so a sample's gradient
    sums over all its calls before the absolute value is taken."""
    xs = [_as_samples(x) for x, _ in pairs]
    gs = [_as_samples(g).to(x.dtype) for x, (_, g) in zip(xs, pairs)]
    if len({x.shape[0] for x in xs}) == 1:
        return [(torch.cat(xs, dim=1).contiguous(), torch.cat(gs, dim=1).contiguous())]
    return [(x.contiguous(), g.contiguous()) for x, g in zip(xs, gs)]


def accumulate_gradient_stats(
    model: nn.Module,
    calib: Iterable,
    targets: Dict[str, nn.Linear],
    loss_fn: Optional[LossFn] = None,
    squared: bool = False,
    progress: bool = True,
) -> Dict[str, torch.Tensor]:
    """{target name: fp32 [N, K]} of sum_s |G_s| (or sum_s G_s^2 if squared)."""
    loss_fn = loss_fn or default_loss
    acc = {n: torch.zeros(m.out_features, m.in_features, dtype=torch.float32, device=m.weight.device)
           for n, m in targets.items()}
    recorder = _CallRecorder(targets)
    batches = 0
    try:
        with _weights_frozen(model, targets):
            for batch in tqdm(calib, desc="saliency", disable=not progress):
                recorder.clear()
                loss = loss_fn(model, batch)
                names = [n for n, calls in recorder.calls.items() for _ in calls]
                outputs = [out for calls in recorder.calls.values() for _, out in calls]
                if not outputs:
                    raise ValueError("loss_fn ran none of the target layers")
                grads = torch.autograd.grad(loss, outputs, allow_unused=True)
                by_layer: Dict[str, List[tuple]] = {}
                for name, (x, _), g in zip(names, [c for cs in recorder.calls.values() for c in cs], grads):
                    if g is not None:
                        by_layer.setdefault(name, []).append((x, g))
                for name, pairs in by_layer.items():
                    for xs, gs in _per_sample_streams(pairs):
                        if squared:
                            for g_s, x_s in zip(gs.float(), xs.float()):
                                acc[name] += (g_s.T @ x_s) ** 2
                        else:
                            ops.saliency_accumulate(acc[name], gs, xs)
                del grads, outputs, loss
                batches += 1
    finally:
        recorder.remove()
    if batches == 0:
        raise ValueError("calibration data is empty")
    return acc

"""Per-sample gradient statistics of the target layers (DESIGN.md §1.1 step 2).

One forward/backward per calibration batch, with no parameter requiring grad
(no weight gradient is ever formed). Hooks pair each target call's input with
its output gradient as the backward pass reaches it (_GradientTap); a module's
calls are concatenated along the token axis (so a sample's gradient sums over
all calls before the absolute value) and reduced by
``tacq.saliency_accumulate`` into one fp32 [N, K] accumulator per layer:
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
def _parameters_frozen(model: nn.Module):
    """No parameter requires grad (flags restored after): the backward pass
    computes activation gradients only, never a weight gradient."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)


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
    if len(xs) > 1 and len({x.shape[0] for x in xs}) == 1:
        return [(torch.cat(xs, dim=1), torch.cat(gs, dim=1).contiguous())]
    return [(x.contiguous(), g.contiguous()) for x, g in zip(xs, gs)]


class _GradientTap:
    """Forward hooks keep each target call's input and pass its output
    through `output + anchor`, a zero scalar leaf that requires grad, so
    autograd.grad(loss, anchors) walks back through every target output
    although no parameter requires grad. A tensor hook on that sum receives
    the output gradient during the backward pass and hands (input, gradient)
    to `reduce` as soon as all calls of the module have theirs, then drops
    both: like a training step, activations are freed as the backward
    proceeds, and only one layer's output gradient lives at a time."""

    def __init__(self, targets: Dict[str, nn.Linear], reduce: Callable[[str, List[tuple]], None]):
        self.reduce = reduce
        self.inputs: Dict[str, List[Optional[torch.Tensor]]] = {n: [] for n in targets}
        self.pending: Dict[str, List[tuple]] = {n: [] for n in targets}
        self.anchors: List[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._forward_hook(n)) for n, m in targets.items()]

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return None
            call = len(self.inputs[name])
            self.inputs[name].append(inputs[0].detach())
            anchor = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
            self.anchors.append(anchor)
            routed = output + anchor
            routed.register_hook(self._gradient_hook(name, call))
            return routed
        return hook

    def _gradient_hook(self, name: str, call: int):
        def hook(grad):
            self.pending[name].append((self.inputs[name][call], grad.detach()))
            self.inputs[name][call] = None
            if len(self.pending[name]) == len(self.inputs[name]):
                self._flush(name)
        return hook

    def _flush(self, name: str) -> None:
        pairs, self.pending[name] = self.pending[name], []
        if pairs:
            self.reduce(name, pairs)

    def backward(self, loss: torch.Tensor) -> None:
        """Runs the backward pass; calls whose output got no gradient add nothing."""
        if not self.anchors:
            raise ValueError("loss_fn ran none of the target layers")
        try:
            torch.autograd.grad(loss, self.anchors, allow_unused=True)
            for name in self.pending:
                self._flush(name)
        finally:
            self.anchors = []
            for name in self.inputs:
                self.inputs[name], self.pending[name] = [], []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


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

    def reduce(name: str, pairs: List[tuple]) -> None:
        for xs, gs in _per_sample_streams(pairs):
            if squared:
                for g_s, x_s in zip(gs.float(), xs.float()):
                    acc[name] += (g_s.T @ x_s) ** 2
            else:
                ops.saliency_accumulate(acc[name], gs, xs)

    tap = _GradientTap(targets, reduce)
    batches = 0
    try:
        with _parameters_frozen(model):
            for batch in tqdm(calib, desc="saliency", disable=not progress):
                tap.backward(loss_fn(model, batch))
                batches += 1
    finally:
        tap.remove()
    if batches == 0:
        raise ValueError("calibration data is empty")
    return acc

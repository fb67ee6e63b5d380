"""Per-sample gradient statistics of the target layers (docs/method.md, step 2).

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
import functools
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from . import ops
from .kv_cache import cache_disabled
from .targets import decoder_blocks

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
    the output gradient during the backward pass; as soon as every call of a
    module has both its input and its gradient, (input, gradient) pairs go to
    `reduce` and are dropped: like a training step, activations are freed as
    the backward proceeds, and only one layer's output gradient lives at a time.

    Calls inside a region run by `checkpointed` (activation checkpointing)
    keep no input during the forward pass: autograd runs the region again
    during the backward pass, and the input comes from that recomputation
    (the k-th recomputed call of a module in a region is its k-th call there)."""

    def __init__(self, targets: Dict[str, nn.Linear], reduce: Callable[[str, List[tuple]], None]):
        self.reduce = reduce
        self.inputs: Dict[str, List[Optional[torch.Tensor]]] = {n: [] for n in targets}
        self.grads: Dict[str, List[Optional[torch.Tensor]]] = {n: [] for n in targets}
        self.anchors: List[torch.Tensor] = []
        self.region: Optional[tuple] = None  # (region id, recomputing) while a checkpointed region runs
        self.regions = 0
        self.region_calls: Dict[tuple, List[int]] = {}  # (name, region id) -> its calls there, in order
        self.handles = [m.register_forward_hook(self._forward_hook(n)) for n, m in targets.items()]

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled():
                return None
            anchor = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
            routed = output + anchor
            if self.region is not None and self.region[1]:  # recomputing: same graph, no new gradient hook
                calls = self.region_calls.get((name, self.region[0]))
                if calls:
                    self.inputs[name][calls.pop(0)] = inputs[0].detach()
                    self._flush_if_complete(name)
                return routed
            call = len(self.inputs[name])
            if self.region is not None:
                self.region_calls.setdefault((name, self.region[0]), []).append(call)
            self.inputs[name].append(None if self.region is not None else inputs[0].detach())
            self.grads[name].append(None)
            self.anchors.append(anchor)
            routed.register_hook(self._gradient_hook(name, call))
            return routed
        return hook

    def _gradient_hook(self, name: str, call: int):
        def hook(grad):
            self.grads[name][call] = grad.detach()
            self._flush_if_complete(name)
        return hook

    @contextlib.contextmanager
    def _in_region(self, region: int, recomputing: bool):
        saved, self.region = self.region, (region, recomputing)
        try:
            yield
        finally:
            self.region = saved

    def checkpointed(self, forward: Callable, *args, **kwargs):
        """forward(*args, **kwargs) under non-reentrant activation
        checkpointing, without early stop (a recomputation runs all of it)."""
        self.regions += 1
        region = self.regions
        return checkpoint(forward, *args, use_reentrant=False, early_stop=False,
                          context_fn=lambda: (self._in_region(region, False), self._in_region(region, True)),
                          **kwargs)

    def _flush_if_complete(self, name: str) -> None:
        if all(g is not None for g in self.grads[name]) and all(x is not None for x in self.inputs[name]):
            self._flush(name)

    def _flush(self, name: str) -> None:
        """Reduces the calls that have both input and gradient; a call with no
        gradient (its output did not reach the loss) adds nothing."""
        pairs = [(x, g) for x, g in zip(self.inputs[name], self.grads[name]) if g is not None]
        if any(x is None for x, _ in pairs):
            raise RuntimeError(f"activation checkpointing: the block holding {name!r} was not recomputed during "
                               "the backward pass, so its input is unknown")
        self.inputs[name] = [None] * len(self.inputs[name])
        self.grads[name] = [None] * len(self.grads[name])
        if pairs:
            self.reduce(name, pairs)

    def backward(self, loss: torch.Tensor, inputs: Sequence[torch.Tensor] = ()) -> tuple:
        """Runs the backward pass, reduces every target's calls and returns
        the gradients of `loss` at `inputs` (tensors that require grad)."""
        if not self.anchors:
            raise ValueError("loss_fn ran none of the target layers")
        try:
            grads = torch.autograd.grad(loss, [*inputs, *self.anchors], allow_unused=True)
            for name in self.grads:
                self._flush(name)
            return grads[:len(inputs)]
        finally:
            self.anchors, self.region_calls = [], {}
            for name in self.inputs:
                self.inputs[name], self.grads[name] = [], []

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def _blocks_checkpointed(model: nn.Module, tap: _GradientTap, enabled: bool):
    """With `enabled`, every decoder block runs through tap.checkpointed, and
    the model's KV cache is off meanwhile, as a recomputed block would append
    to it twice."""
    if not enabled:
        yield
        return
    blocks = decoder_blocks(model)
    if blocks is None:
        raise ValueError("activation_checkpointing needs a model with decoder blocks "
                         "(the layers of model.get_decoder())")
    instance_forwards = [block.__dict__.get("forward") for block in blocks]
    try:
        with cache_disabled(model):
            for block in blocks:
                block.forward = functools.partial(tap.checkpointed, block.forward)
            yield
    finally:
        for block, forward in zip(blocks, instance_forwards):
            if forward is None:
                del block.forward
            else:
                block.forward = forward


def gradient_reducer(acc: Dict[str, torch.Tensor], squared: bool) -> Callable[[str, List[tuple]], None]:
    """The _GradientTap reduce adding a layer's (input, gradient) calls into
    acc[name]: sum_s |G_s| by tacq.saliency_accumulate, or sum_s G_s^2."""
    def reduce(name: str, pairs: List[tuple]) -> None:
        for xs, gs in _per_sample_streams(pairs):
            if squared:
                for g_s, x_s in zip(gs.float(), xs.float()):
                    acc[name] += (g_s.T @ x_s) ** 2
            else:
                ops.saliency_accumulate(acc[name], gs, xs)
    return reduce


def accumulate_gradient_stats(
    model: nn.Module,
    calib: Iterable,
    targets: Dict[str, nn.Linear],
    loss_fn: Optional[LossFn] = None,
    squared: bool = False,
    progress: bool = True,
    activation_checkpointing: bool = False,
) -> Dict[str, torch.Tensor]:
    """{target name: fp32 [N, K]} of sum_s |G_s| (or sum_s G_s^2 if squared).
    activation_checkpointing: keep only each decoder block's input during the
    forward pass and recompute the block during the backward pass (about one
    more forward pass of time, for long sequences whose activations do not
    fit); the statistics are the same."""
    loss_fn = loss_fn or default_loss
    acc = {n: torch.zeros(m.out_features, m.in_features, dtype=torch.float32, device=m.weight.device)
           for n, m in targets.items()}
    tap, batches = _GradientTap(targets, gradient_reducer(acc, squared)), 0
    try:
        with _parameters_frozen(model), _blocks_checkpointed(model, tap, activation_checkpointing):
            for batch in tqdm(calib, desc="saliency", disable=not progress):
                tap.backward(loss_fn(model, batch))
                batches += 1
    finally:
        tap.remove()
    if batches == 0:
        raise ValueError("calibration data is empty")
    return acc

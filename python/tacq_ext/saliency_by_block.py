"""The gradient pass of docs/method.md step 2, one decoder block at a time,
for offloaded models (offload.py): each block is read onto the device twice
per pass, whatever the number of batches, and only one block's weights,
activations and accumulators are on the device at a time.

0. The blocks' arguments (masks, rotary tables) per batch, from forward
   passes in which no block runs (sequential._capture_block_inputs).
1. Forward, block by block: every batch's input of every block is kept (on
   the storage device, the CPU), each block run on all batches while held.
2. The gradient of the loss at the last block's output, per batch: the model
   runs through loss_fn with its blocks bypassed (the first returns the last
   block's output, the others pass it on), so the head and the loss are the
   model's own.
3. Backward, from the last block to the first: each block, held, runs again on
   each batch's input, and the backward of `sum(output * gradient)` (whose
   gradient at the output is exactly the incoming one) gives the block's
   per-sample statistics through saliency._GradientTap and the gradient at
   the block's input, passed to the block below. A block's accumulators are
   reduced over the ranks right away (data-parallel) and moved to storage.

The statistics are those of saliency.accumulate_gradient_stats: the same
per-sample products, added over the batches in the same order.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .distributed import Ranks
from .kv_cache import cache_disabled
from .offload import OffloadedBlocks, passing_forward
from .saliency import LossFn, _GradientTap, _parameters_frozen, default_loss, gradient_reducer
from .sequential import OFFLOADED_CHAIN_NEEDED, _block_output, _capture_block_inputs
from .targets import targets_by_block


def _forward_all(offload: OffloadedBlocks, calls: list, hidden: list, progress: bool):
    """([per block and the output of the last: [per batch: hidden state]] on
    storage, whether blocks return tuples)."""
    inputs = [[h.to(offload.storage) for h in hidden]]
    as_tuple = False
    with torch.no_grad():
        for i, block in enumerate(tqdm(offload.blocks, desc="saliency: forward", disable=not progress,
                                       leave=False)):
            outputs = []
            with offload.held(i):
                for h, call in zip(inputs[i], calls[i]):
                    out = block(h.to(offload.device), *call.args, **call.kwargs)
                    as_tuple = isinstance(out, (tuple, list))
                    outputs.append(_block_output(out).to(offload.storage))
            inputs.append(outputs)
    return inputs, as_tuple


def _gradients_at_top(model: nn.Module, offload: OffloadedBlocks, calib: list, finals: list, as_tuple: bool,
                      loss_fn: LossFn) -> List[torch.Tensor]:
    """d loss / d (last block's output), per batch, through the model's own head and loss_fn."""
    grads = []
    with _parameters_frozen(model):
        for batch, final in zip(calib, finals):
            leaf = final.to(offload.device).detach().requires_grad_()
            with offload.replaced_forwards(lambda i: passing_forward(as_tuple, leaf if i == 0 else None)):
                loss = loss_fn(model, batch)
            grads.append(torch.autograd.grad(loss, leaf)[0])
    return grads


def _block_backward(block: nn.Module, tap: Optional[_GradientTap], h: torch.Tensor, call, grad: torch.Tensor,
                    need_input_grad: bool) -> Optional[torch.Tensor]:
    """Runs the block on h and back from `grad` at its output: the tap (None
    for a block without targets) reduces its targets' calls; returns the
    gradient at h, if needed."""
    leaf = h.detach().requires_grad_(need_input_grad)
    out = _block_output(block(leaf, *call.args, **call.kwargs))
    loss = (out * grad).sum()  # its gradient at `out` is exactly `grad`
    inputs = [leaf] if need_input_grad else []
    if tap is not None:
        below = tap.backward(loss, inputs)
    elif need_input_grad:
        below = torch.autograd.grad(loss, inputs)
    else:
        return None
    return below[0] if need_input_grad else None


def gradient_stats_by_block(model: nn.Module, offload: OffloadedBlocks, calib: list,
                            targets: Dict[str, nn.Linear], loss_fn: Optional[LossFn] = None,
                            squared: bool = False, progress: bool = True,
                            ranks: Optional[Ranks] = None) -> Dict[str, torch.Tensor]:
    """{target name: fp32 [N, K]} of sum_s |G_s| (sum_s G_s^2 if squared) on
    offload.storage, for the targets this rank owns (every target in one
    process); as accumulate_gradient_stats followed by Ranks.reduce_to_owners."""
    ranks = ranks or Ranks.single()
    loss_fn = loss_fn or default_loss
    per_block, rest = targets_by_block(model, targets)
    if rest:
        raise ValueError(f"with offloaded blocks every target layer must be inside a decoder block; "
                         f"{rest[:3]} are not")
    with ranks.agree("saliency: forward"), cache_disabled(model):
        captured = _capture_block_inputs(model, offload.blocks, calib, loss_fn, "saliency: block inputs", progress,
                                         offload)
        if captured is None:
            raise ValueError(OFFLOADED_CHAIN_NEEDED)
        hidden, calls = captured
        inputs, as_tuple = _forward_all(offload, calls, hidden, progress)
        grads = _gradients_at_top(model, offload, calib, inputs.pop(), as_tuple, loss_fn)

    owned: Dict[str, torch.Tensor] = {}
    for i in tqdm(reversed(range(len(offload.blocks))), total=len(offload.blocks), desc="saliency: backward",
                  disable=not progress):
        names = per_block[i]
        acc = {n: torch.zeros(targets[n].out_features, targets[n].in_features, dtype=torch.float32,
                              device=offload.device) for n in names}
        with ranks.agree(f"saliency: block {i}"), offload.held(i), cache_disabled(model):
            tap = _GradientTap({n: targets[n] for n in names}, gradient_reducer(acc, squared)) if names else None
            try:
                for b, (h, call) in enumerate(zip(inputs[i], calls[i])):
                    grads[b] = _block_backward(offload.blocks[i], tap, h.to(offload.device), call, grads[b],
                                               need_input_grad=i > 0)
            finally:
                if tap is not None:
                    tap.remove()
        inputs[i] = None
        for name, t in ranks.reduce_to_owners(acc).items():
            owned[name] = t.to(offload.storage)
    return owned

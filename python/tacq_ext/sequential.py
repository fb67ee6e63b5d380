"""Layer-wise passes whose inputs come from the already quantized prefix of the
model (docs/method.md, step 5), in the usual GPTQ sequential pattern.

For a model whose decoder blocks form a chain (block i+1 takes block i's
output), one forward pass records block 0's input and every block's other
arguments (masks, positions, rotary tables) per calibration batch. Then, block
by block: run the block on the cached inputs with hooks that accumulate its
target layers' Hessians, let the caller quantize those layers, and run the
block again (now quantized) to produce the next block's inputs. Each block runs
twice in all and only one block's Hessians are held at a time.

Where the structure is unknown (no decoder blocks, blocks that are not called
as a chain, or targets outside the blocks), each group of targets gets one
forward pass of the whole model per batch, through loss_fn, stopped as soon as
every layer of the group has seen its input.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .distributed import Ranks
from .gptq import HessianAccumulator
from .kv_cache import cache_disabled, is_kv_cache
from .offload import OffloadedBlocks, block_held, offload_of, passing_forward
from .saliency import LossFn
from .targets import decoder_blocks, targets_by_block

OFFLOADED_CHAIN_NEEDED = ("offloaded blocks need decoder blocks that run once each, in order, each on the previous "
                          "one's output")

# {target name: Hessian, None where another rank owns the layer} of one group ->
# {target name: weight the rest of the pass must see}; empty when the caller
# swapped the quantized layers in itself.
QuantizeGroup = Callable[[Dict[str, Optional[torch.Tensor]]], Dict[str, torch.Tensor]]


class _StopForward(Exception):
    """Raised by a hook once every layer a pass needs has seen its input."""


def run_model(model: nn.Module, batch, loss_fn: Optional[LossFn]) -> None:
    """One forward pass over a batch: through loss_fn, or model(**batch) without labels."""
    if loss_fn is not None:
        loss_fn(model, batch)
    elif isinstance(batch, dict):
        model(**{k: v for k, v in batch.items() if k != "labels"})
    else:
        raise ValueError("batches that are not dicts need a loss_fn")


def _token_mask(batch) -> Optional[torch.Tensor]:
    return batch.get("attention_mask") if isinstance(batch, dict) else None


class _HessianHooks:
    """Forward hooks adding each module's inputs to its Hessian; positions the
    current batch's attention_mask marks as padding are left out."""

    def __init__(self, modules: Dict[str, nn.Module], stop_when_all_seen: bool = False):
        self.acc = {n: HessianAccumulator(m.in_features, m.weight.device) for n, m in modules.items()}
        self.mask: Optional[torch.Tensor] = None
        self.seen: set = set()
        self.stop_when_all_seen = stop_when_all_seen
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            if self.mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(self.mask.shape):
                x = x[self.mask.bool()]
            self.acc[name].add(x)
            self.seen.add(name)
            if self.stop_when_all_seen and len(self.seen) == len(self.acc):
                raise _StopForward
        return hook

    def start_batch(self, batch) -> None:
        self.mask, self.seen = _token_mask(batch), set()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def collect_hessians(model: nn.Module, calib: list, modules: Dict[str, nn.Module],
                     loss_fn: Optional[LossFn] = None, desc: str = "hessians",
                     progress: bool = True, ranks: Optional[Ranks] = None) -> Dict[str, Optional[torch.Tensor]]:
    """H = 2/n sum x x^T of each module's inputs over the calibration tokens,
    from forward passes of the whole model stopped once every module has run.
    Data-parallel (ranks): tokens of every rank, on the owner rank (None elsewhere)."""
    ranks = ranks or Ranks.single()
    hooks = _HessianHooks(modules, stop_when_all_seen=True)
    with ranks.agree(desc):
        try:
            with torch.no_grad():
                for batch in tqdm(calib, desc=desc, disable=not progress, leave=False):
                    hooks.start_batch(batch)
                    try:
                        run_model(model, batch, loss_fn)
                    except _StopForward:
                        pass
        finally:
            hooks.remove()
    return ranks.reduce_hessians(hooks.acc)


@contextmanager
def weights_replaced(modules: Dict[str, nn.Module], weights: Dict[str, torch.Tensor]):
    """Temporarily runs modules[name] with weights[name] instead of its weight."""
    saved = {}
    try:
        for name, w in weights.items():
            param = modules[name].weight
            saved[name] = param.data
            param.data = w.to(dtype=param.dtype, device=param.device)
        yield
    finally:
        for name, data in saved.items():
            modules[name].weight.data = data


@dataclass
class _BlockCall:
    """A block's arguments other than the hidden states, for one batch."""
    args: tuple
    kwargs: dict


def _hidden_and_rest(args: tuple, kwargs: dict):
    if args:
        return args[0], _BlockCall(tuple(args[1:]), dict(kwargs))
    rest = dict(kwargs)
    return rest.pop("hidden_states", None), _BlockCall((), rest)


def _without_cache(call: _BlockCall) -> _BlockCall:
    """Block calls are replayed several times, so no key/value cache may be
    passed on: every cache object is replaced by None and use_cache by False."""
    args = tuple(None if is_kv_cache(v) else v for v in call.args)
    kwargs = {k: (None if is_kv_cache(v) else v) for k, v in call.kwargs.items()}
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return _BlockCall(args, kwargs)


def _block_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _blocks_return_tuples(model: nn.Module, blocks: nn.ModuleList, batch, loss_fn: Optional[LossFn]) -> bool:
    """Whether the decoder blocks return tuples (some of transformers 4's
    layers) rather than their hidden states: block 0 runs once, for real, on
    `batch`, and the pass stops at its output."""
    returned = []

    def stop(module, args, kwargs, out):
        returned.append(isinstance(out, (tuple, list)))
        raise _StopForward

    handle = blocks[0].register_forward_hook(stop, with_kwargs=True)
    try:
        with torch.no_grad(), cache_disabled(model):
            run_model(model, batch, loss_fn)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return bool(returned) and returned[0]


def _capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, calib: list, loss_fn: Optional[LossFn],
                          desc: str, progress: bool, offload: Optional[OffloadedBlocks] = None):
    """(block 0's hidden input per batch, [per block: [per batch: _BlockCall]]),
    or None when the blocks are not called exactly once each, in order, each
    on the previous one's output. With `offload` (blocks offloaded), no block
    is read: each passes its input on, and each pass stops at the last
    block's call."""
    # offloaded: each block's stand-in returns its input in the form the real blocks return
    as_tuple = (offload is not None and len(blocks) > 1 and bool(calib)
                and _blocks_return_tuples(model, blocks, calib[0], loss_fn))
    hidden: List[torch.Tensor] = []
    calls: List[List[_BlockCall]] = [[] for _ in blocks]
    state = {"order": [], "last_out": None, "chain": True}

    def pre_hook(i):
        def hook(module, args, kwargs):
            h, rest = _hidden_and_rest(args, kwargs)
            if h is None or (i > 0 and h is not state["last_out"]):
                state["chain"] = False
            elif i == 0:
                hidden.append(h)
            state["order"].append(i)
            calls[i].append(_without_cache(rest))
            if offload is not None and i == len(blocks) - 1:
                raise _StopForward
        return hook

    def post_hook(module, args, kwargs, out):
        state["last_out"] = _block_output(out)

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook, with_kwargs=True))
    passing = nullcontext() if offload is None else offload.replaced_forwards(lambda i: passing_forward(as_tuple))
    try:
        with torch.no_grad(), cache_disabled(model), passing:
            for batch in tqdm(calib, desc=desc, disable=not progress, leave=False):
                state["order"], state["last_out"] = [], None
                try:
                    run_model(model, batch, loss_fn)
                except _StopForward:
                    pass
                if state["order"] != list(range(len(blocks))) or not state["chain"]:
                    return None
    finally:
        for h in handles:
            h.remove()
    return hidden, calls


def quantize_sequentially(model: nn.Module, calib: list, targets: Dict[str, nn.Module],
                          quantize_group: QuantizeGroup, loss_fn: Optional[LossFn] = None,
                          desc: str = "gptq", progress: bool = True, ranks: Optional[Ranks] = None) -> None:
    """Calls quantize_group once per group of targets (a decoder block, or one
    target where the structure is unknown), in model order, with Hessians of
    inputs that flow through the groups already quantized. Data-parallel
    (ranks): each rank replays its own batches, and quantize_group gets every
    name of the group with its Hessian on the owner rank, None elsewhere."""
    ranks = ranks or Ranks.single()
    blocks = decoder_blocks(model)
    per_block, rest = targets_by_block(model, targets)
    captured = None
    offload = offload_of(model)
    with ranks.agree(f"{desc}: block inputs"):
        if any(per_block):
            captured = _capture_block_inputs(model, blocks, calib, loss_fn, f"{desc}: block inputs", progress,
                                             offload)
        if offload is not None and captured is None:
            raise ValueError(OFFLOADED_CHAIN_NEEDED)
    if not ranks.all_true(captured is not None):
        per_block, rest = [], list(targets)
    # weights earlier groups asked for; only the whole-model passes need them kept
    replaced: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if per_block:
            hidden, calls = captured
            masks = [_token_mask(b) for b in calib]
            last = max(i for i, names in enumerate(per_block) if names)
            for i in tqdm(range(last + 1), desc=desc, disable=not progress):
                block, names = blocks[i], per_block[i]
                overrides = {}
                with block_held(model, i):  # offloaded blocks: resident for this iteration
                    if names:
                        hooks = _HessianHooks({n: targets[n] for n in names})
                        with ranks.agree(f"{desc}: block {i}"):
                            try:
                                for h, call, mask in zip(hidden, calls[i], masks):
                                    hooks.mask = mask
                                    block(h, *call.args, **call.kwargs)
                            finally:
                                hooks.remove()
                        overrides = quantize_group(ranks.reduce_hessians(hooks.acc))
                        if rest:
                            replaced.update(overrides)
                    if i < last:
                        with ranks.agree(f"{desc}: block {i} outputs"), weights_replaced(targets, overrides):
                            hidden = [_block_output(block(h, *call.args, **call.kwargs))
                                      for h, call in zip(hidden, calls[i])]
            del hidden
        for name in tqdm(rest, desc=desc if not per_block else f"{desc} (other layers)", disable=not progress):
            with weights_replaced(targets, replaced):
                hessians = collect_hessians(model, calib, {name: targets[name]}, loss_fn, "layer inputs", progress,
                                            ranks)
            replaced.update(quantize_group(hessians))

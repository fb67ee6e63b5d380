"""Which nn.Linear layers of a model get quantized."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn

TargetFilter = Callable[[str, nn.Linear], bool]


def decoder_blocks(model: nn.Module) -> Optional[nn.ModuleList]:
    """The decoder blocks of a Hugging Face causal LM (model.model.layers), if any."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) > 0 else None


def find_targets(model: nn.Module, target_filter: Optional[TargetFilter] = None) -> Dict[str, nn.Linear]:
    """Target linear layers by qualified name, in module order.

    Default: for a model with decoder blocks (model.model.layers), every Linear
    inside them (attention and MLP projections; never embeddings or lm_head);
    otherwise every Linear except one named ``lm_head``."""
    blocks = decoder_blocks(model)
    inside = set()
    if blocks is not None:
        inside = {id(m) for m in blocks.modules()}
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if target_filter is not None:
            keep = target_filter(name, module)
        elif blocks is not None:
            keep = id(module) in inside
        else:
            keep = name.split(".")[-1] != "lm_head"
        if keep:
            found[name] = module
    if not found:
        raise ValueError("model has no nn.Linear layers to quantize (target filter matched nothing)")
    return found


def targets_by_block(model: nn.Module, targets: Dict[str, nn.Linear]) -> Tuple[List[List[str]], List[str]]:
    """(names of the targets inside each decoder block, in block order; names
    of the targets outside every block). Without decoder blocks: ([], all)."""
    blocks = decoder_blocks(model)
    if blocks is None:
        return [], list(targets)
    per_block = []
    for block in blocks:
        ids = {id(m) for m in block.modules()}
        per_block.append([n for n, m in targets.items() if id(m) in ids])
    inside = {n for names in per_block for n in names}
    return per_block, [n for n in targets if n not in inside]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
